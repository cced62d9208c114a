"""The broadcaster process: relays every sample to WebSocket clients as JSON."""
