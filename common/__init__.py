"""Pieces shared by the producer, logger and broadcaster processes."""
