"""The producer process: simulates samples on a fixed schedule and publishes them."""
