"""Training: Spark ML jobs on the batch files, tracked and registered in MLflow; promotion."""
