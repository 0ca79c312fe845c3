"""What the Spark standalone cluster is made of (ports, workers, memory), read by `btcflow spark`, the stack
and the tests; and how Spark spells a JVM memory size."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import BadInput

HOST = "127.0.0.1"  # BTCFLOW_SPARK_HOST's default


def event_log_uri(data_dir: Path, configured: str | None) -> str:
    """Where training writes Spark event logs and the history server reads them (one default): an
    absolute file:// URI, or the hdfs:// one configured (on hosts that share no disk)."""
    if configured and "://" in configured:
        return configured.rstrip("/")
    return (Path(configured) if configured else data_dir / "spark" / "events").resolve().as_uri()


def make_event_dir(uri: str) -> None:
    """Create the event log folder, on the local disk or on HDFS."""
    from core.storage import open_storage

    open_storage(uri).make_folder()


class SparkSettings(BaseSettings):
    """What `btcflow spark` and the tests read (environment, prefix BTCFLOW_SPARK_, and BTCFLOW_DATA_DIR)."""

    model_config = SettingsConfigDict(env_prefix="BTCFLOW_SPARK_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(
        Path("data"),
        validation_alias=AliasChoices("BTCFLOW_DATA_DIR", "data_dir"),
        description="The cluster keeps its logs, pids, work dirs and event logs in <data_dir>/spark.",
    )
    host: str = Field(
        HOST,
        description="Address this host's daemons (master, workers, history server) and their executors "
        "bind, and the web UIs link to. On hosts that share nothing, each host's own address.",
    )
    join: str | None = Field(
        None,
        description="spark://host:port of a master on another host: `btcflow spark start` then runs only "
        "this host's workers, which register with it (no master, no history server here).",
    )
    port: int = Field(
        7077, ge=1, le=65535, description="Port of the standalone master (spark://<host>:port)."
    )
    ui_port: int = Field(
        8080, ge=1, le=65535, description="Port of the master's web UI (/json/ lists workers)."
    )
    worker_ui_port: int = Field(
        8081, ge=1, le=65535, description="Web UI port of worker 1; worker i takes this port + i - 1."
    )
    history_port: int = Field(18080, ge=1, le=65535, description="Port of the Spark history server.")
    workers: int = Field(
        1, ge=0, description="Workers `btcflow spark start` runs (0: the master and history server only)."
    )
    worker_cores: int = Field(2, ge=1, description="Cores each worker offers to executors.")
    worker_memory: str = Field("2g", description="Memory each worker offers to executors (e.g. 2g).")
    daemon_memory: str = Field(
        "512m", description="Heap of each daemon JVM (master, worker, history server), not of executors."
    )
    executor_memory: str = Field(
        "1g", description="Executor heap training asks for (as TrainingSettings reads it): must fit a worker."
    )
    event_dir: str | None = Field(
        None,
        description="Event logs training writes, the history server shows: a folder, or "
        "hdfs://host:port/path when the hosts share no disk. Unset: <data_dir>/spark/events.",
    )

    @property
    def home(self) -> Path:
        return self.data_dir / "spark"

    @property
    def master_url(self) -> str:
        return self.join or f"spark://{self.host}:{self.port}"


def memory_mb(text: str, what: str = "memory") -> float:
    """Megabytes of a JVM memory string as Spark reads one (512m, 2g, 1500M, 2gb); BadInput otherwise."""
    match = re.fullmatch(r"(\d+)([kmgt]?)b?", text.strip().lower())
    if not match or int(match[1]) == 0:
        raise BadInput(f"bad {what} {text!r}: use a size such as 512m or 2g")
    return int(match[1]) * {"k": 2**-10, "m": 1, "": 1, "g": 2**10, "t": 2**20}[match[2]]
