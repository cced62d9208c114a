"""The simulation: each sample a pure function of (seed, device, time), anomalies included."""
