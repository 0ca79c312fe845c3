"""Ingest settings, read once by the entry point (environment, prefix BTCFLOW_) and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.storage import Storage, open_storage
from pipeline import defaults

if TYPE_CHECKING:
    from services.kafka.cluster import EmbeddedCluster

REPO_ROOT = Path(__file__).resolve().parents[1]


class PipelineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BTCFLOW_", extra="ignore")

    kafka_bootstrap: str | None = Field(
        None,
        description="Kafka bootstrap servers. Unset: the embedded cluster's nodes on 127.0.0.1. "
        "Set: btcflow uses that cluster and starts nothing.",
    )
    topic: str = Field(defaults.TOPIC, description="Topic the producer writes and the consumer reads.")
    partitions: int = Field(
        1, ge=1, description="Partitions for a topic btcflow creates; 1 keeps the file's order end to end."
    )
    consumer_group: str = Field(
        defaults.CONSUMER_GROUP,
        description="Consumer group of `btcflow consume`: its members on one --out write one dataset. "
        "Its committed offsets are informational: the manifest says where to resume, and a partition "
        "it does not list starts at the beginning.",
    )
    data_dir: Path = Field(Path("data"), description="Input CSV and batch/ output live here.")
    batch_uri: str | None = Field(
        None,
        description="Where the dataset lives (batch files, manifest.json, the _commits/ log): a local "
        "folder, or hdfs://host:port/path on HDFS (reached without a JVM). Unset: <data_dir>/batch.",
    )
    broker_nodes: int = Field(
        defaults.BROKER_NODES,
        ge=1,
        description="Nodes of the embedded cluster (each a broker and a KRaft controller voter); "
        "`btcflow broker start --nodes N` overrides it. With 3 or more, topics btcflow creates get "
        "3 replicas and min.insync.replicas=2, so losing one node loses no acknowledged row.",
    )
    broker_port: int = Field(
        9092,
        description="Client port of the embedded cluster's node 1; node i uses port + 2(i-1), "
        "its controller the port after its own.",
    )
    broker_dir: Path | None = Field(
        None,
        description="Embedded cluster's home: cluster.json and one node-<i>/ folder per node (storage, "
        "server.properties, broker.log, broker.pid). Unset: <data_dir>/kafka.",
    )
    kafka_jars: Path = Field(
        REPO_ROOT / ".cache" / "kafka",
        description="Where `btcflow broker setup` puts the Kafka jars resolved by Maven.",
    )
    broker_heap: str = Field(
        defaults.BROKER_HEAP, description="JVM heap (-Xmx) of each node of the embedded cluster."
    )

    @property
    def embedded(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def bootstrap(self) -> str:
        """The external cluster, else every node of the embedded one (clients need only one to answer)."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        return ",".join(f"127.0.0.1:{self.broker_port + 2 * i}" for i in range(self.broker_nodes))

    @property
    def batch_dir(self) -> Path:
        """The local default of the dataset's folder (when BTCFLOW_BATCH_URI is unset)."""
        return self.data_dir / "batch"

    @property
    def batch_location(self) -> str:
        return self.batch_uri or str(self.batch_dir)

    def batch_storage(self) -> Storage:
        return open_storage(self.batch_location)

    @property
    def broker_home(self) -> Path:
        return self.broker_dir or self.data_dir / "kafka"

    def embedded_cluster(self) -> EmbeddedCluster:
        """The embedded Kafka cluster these settings describe (its home, jars, nodes, port and heap)."""
        from services.kafka.cluster import EmbeddedCluster

        return EmbeddedCluster(
            self.broker_home, self.kafka_jars, self.broker_nodes, self.broker_port, self.broker_heap
        )
