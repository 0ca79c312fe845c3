"""Session fixture: a real Spark standalone cluster (master, worker, history server) from pyspark's distribution."""
