"""What the HDFS cluster btcflow runs is made of (host, ports, heap, DataNodes, where its files and jars
live), read by `btcflow hdfs`, the stack and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services import defaults

if TYPE_CHECKING:
    from services.hdfs.cluster import HdfsCluster

REPO_ROOT = Path(__file__).resolve().parents[2]


class HdfsSettings(BaseSettings):
    """Environment, prefix BTCFLOW_HDFS_ (and BTCFLOW_DATA_DIR)."""

    model_config = SettingsConfigDict(env_prefix="BTCFLOW_HDFS_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(
        Path("data"),
        validation_alias=AliasChoices("BTCFLOW_DATA_DIR", "data_dir"),
        description="The cluster keeps its namespace, blocks, logs and pids in <data_dir>/hdfs.",
    )
    dir: Path | None = Field(
        None,
        description="The cluster's home: namenode/ and one datanode-<i>/ folder per DataNode. "
        "Unset: <data_dir>/hdfs.",
    )
    host: str = Field(
        defaults.HDFS_HOST,
        description="The address every daemon binds and registers under (a loopback address of its own "
        "when several hosts are simulated on one machine).",
    )
    port: int = Field(defaults.HDFS_PORT, ge=1, le=65535, description="NameNode RPC port (hdfs://host:port).")
    http_port: int = Field(
        defaults.HDFS_HTTP_PORT, ge=1, le=65535, description="NameNode web UI, JMX and WebHDFS port."
    )
    heap: str = Field(defaults.HDFS_HEAP, description="JVM heap (-Xmx) of each daemon.")
    datanodes: int = Field(
        defaults.HDFS_DATANODES,
        ge=0,
        description="DataNodes `btcflow hdfs start` runs on this host (0: the NameNode only).",
    )
    replication: int | None = Field(
        None,
        ge=1,
        description="Replicas of each block. Unset: as many as DataNodes started, at most 3.",
    )
    jars: Path = Field(
        REPO_ROOT / ".cache" / "hdfs",
        description="Where `btcflow hdfs setup` puts the Hadoop jars resolved by Maven.",
    )

    @property
    def home(self) -> Path:
        return self.dir or self.data_dir / "hdfs"

    @property
    def address(self) -> str:
        return f"hdfs://{self.host}:{self.port}"

    def cluster(self) -> HdfsCluster:
        """The cluster these settings describe."""
        from services.hdfs.cluster import HdfsCluster

        return HdfsCluster(
            self.home,
            self.jars,
            host=self.host,
            port=self.port,
            http_port=self.http_port,
            heap=self.heap,
            replication=self.replication,
        )
