"""Session fixture: a real MLflow tracking server on its own PostgreSQL cluster, artifacts proxied."""
