"""Defaults of the pipeline's settings that `btcflow ... --help` shows, as plain constants.

PipelineSettings declares its fields with them and the command line prints them, from one place,
without importing pydantic-settings (which alone costs `btcflow --help` ~0.15 s).
"""

TOPIC = "bitcoin-topic"

CONSUMER_GROUP = "btcflow-batcher"
BROKER_NODES = 1
BROKER_HEAP = "512m"
BROKER_HOST = "127.0.0.1"
BROKER_PORT = 9092

BAD_PRINT_RATE = 5e-5  # generated minutes (pipeline.synth): share of traded ones printed far off the market
LONG_GAP_RATE = 1e-5  # generated minutes: share of rows followed by an outage of 1 hour to 3 days


def live_topic(topic: str) -> str:
    """The topic `btcflow demo` replays its held-out tail into, for the monitor: apart from the ingest."""
    return f"{topic}-live"
