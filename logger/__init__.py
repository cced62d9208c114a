"""The logger process: subscribes to the samples and appends them to a CSV file."""
