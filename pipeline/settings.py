"""Ingest settings, read once by the entry point (environment, prefix BTCFLOW_) and passed down."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class PipelineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BTCFLOW_", extra="ignore")

    kafka_bootstrap: str | None = Field(
        None,
        description="Kafka bootstrap servers. Unset: the embedded broker on 127.0.0.1:<broker_port>. "
        "Set: btcflow uses that cluster and starts nothing.",
    )
    topic: str = Field("bitcoin-topic", description="Topic the producer writes and the consumer reads.")
    partitions: int = Field(
        1, ge=1, description="Partitions for a topic btcflow creates; 1 keeps the file's order end to end."
    )
    consumer_group: str = Field(
        "btcflow-batcher",
        description="Consumer group of `btcflow consume`: one process per group (static membership). "
        "Its committed offsets are informational: the manifest says where to resume, and a partition "
        "it does not list starts at the beginning.",
    )
    data_dir: Path = Field(Path("data"), description="Input CSV and batch/ output live here.")
    broker_port: int = Field(9092, description="Client port of the embedded broker (controller: +1).")
    broker_dir: Path | None = Field(
        None, description="Embedded broker's storage, log and pid file. Unset: <data_dir>/kafka."
    )
    kafka_jars: Path = Field(
        REPO_ROOT / ".cache" / "kafka",
        description="Where `btcflow broker setup` puts the Kafka jars resolved by Maven.",
    )
    broker_heap: str = Field("1g", description="JVM heap of the embedded broker (-Xmx).")

    @property
    def embedded(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.broker_port}"

    @property
    def batch_dir(self) -> Path:
        return self.data_dir / "batch"

    @property
    def broker_home(self) -> Path:
        return self.broker_dir or self.data_dir / "kafka"
