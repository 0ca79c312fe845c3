"""The services btcflow runs on this machine: Kafka nodes, Spark daemons, HDFS, PostgreSQL, the MLflow server.

Each is a detached process known by its pid file (services.processes); the domain packages only talk to
them as clients.
"""
