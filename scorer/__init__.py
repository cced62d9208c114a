"""The scorer: detectors' alerts matched against the stream's exact labels, live or from files."""
