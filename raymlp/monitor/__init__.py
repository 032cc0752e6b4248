"""Monitor stage: metrics exported for Prometheus, drift against the training reference, live
performance from labels joined by request id, and retraining."""
