"""Catch-up: the producer keeps what it published and resends it to subscribers that missed it."""
