"""The Kafka cluster btcflow runs: jars, nodes, and the admin probes that say it is up."""
