"""Spark: the session helper, pure transforms, and the batch and streaming jobs."""
