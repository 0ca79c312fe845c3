"""The Spark standalone cluster btcflow runs from pyspark's own distribution."""
