"""Serving: the FastAPI gateway over the registry's Production models (no Spark, no pipeline)."""
