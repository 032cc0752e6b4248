"""Serve stage: the Ray Serve app builder and an HTTP client for it."""
