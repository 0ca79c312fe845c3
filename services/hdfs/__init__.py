"""The HDFS cluster btcflow runs: a NameNode and DataNodes from Apache Hadoop's own jars, each one JVM."""
