"""Lifecycle stages: MLflow tracking, the model registry, and compression."""
