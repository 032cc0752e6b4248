"""Monitor stage: metrics exported for Prometheus (drift and retraining build on these)."""
