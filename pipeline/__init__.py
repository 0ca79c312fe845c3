"""Ingest: the embedded Kafka broker, the data generator, the replay producer and the batching consumer."""
