"""Train stage: the per-worker loop, the model zoo and the TorchTrainer that runs them."""
