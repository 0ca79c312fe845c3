"""Training settings, read once by the entry point (environment, prefix BTCFLOW_) and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.storage import Storage, open_storage
from core.tracking import MLRUNS_DIR, default_tracking_uri
from services.spark.settings import event_log_uri
from training.specs import EXPERIMENT


class TrainingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BTCFLOW_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(Path("data"), description="Batch files are read from <data_dir>/batch.")
    batch_uri: str | None = Field(
        None,
        description="Where the dataset lives (batch files, manifest.json, the _commits/ log): a local "
        "folder, or hdfs://host:port/path on HDFS (reached without a JVM). Unset: <data_dir>/batch.",
    )
    spark_master: str = Field("local[*]", description="Spark master for training (local mode by default).")
    spark_driver_memory: str = Field(
        "4g", description="Driver heap for local Spark; the whole job runs in the driver in local mode."
    )
    spark_partitions: int = Field(
        4, ge=1, description="spark.sql.shuffle.partitions: a few per core suit local mode, not 200."
    )
    tracking_uri_env: str | None = Field(
        None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "tracking_uri"),
        description="MLflow tracking store (env MLFLOW_TRACKING_URI, no prefix). Unset: SQLite in "
        "<mlruns_dir>/mlflow.db with artifacts in <mlruns_dir>/artifacts.",
    )
    mlruns_dir: Path = Field(MLRUNS_DIR, description="Home of the default embedded MLflow store.")
    experiment: str = Field(EXPERIMENT, description="MLflow experiment every training run goes to.")
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of the selected rows, the latest by Timestamp, kept for testing."
    )
    tracking_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for an HTTP tracking server before giving up (exit 3)."
    )
    spark_executor_memory: str = Field(
        "1g", description="Heap of each executor on a standalone cluster; must fit a worker's memory."
    )
    spark_executor_cores: int | None = Field(
        None, ge=1, description="Cores per executor on a standalone cluster; unset: all of a worker's cores."
    )
    spark_driver_host: str | None = Field(
        None,
        description="Address the driver binds and its executors call back (a host of its own, e.g. "
        "127.0.0.4). Unset: 127.0.0.1 with a master on 127.0.0.1, else Spark's own choice.",
    )
    spark_event_dir: str | None = Field(
        None,
        description="Spark event logs of every training run, read by the history server. "
        "Unset: <data_dir>/spark/events.",
    )

    @property
    def event_dir(self) -> str:
        """The event log folder, absolute; the same default as the history server's (SparkSettings)."""
        return event_log_uri(self.data_dir, self.spark_event_dir)

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
    def tracking_uri(self) -> str:
        return self.tracking_uri_env or default_tracking_uri(self.mlruns_dir)

    @property
    def artifact_location(self) -> str | None:
        """Where a new experiment keeps artifacts: beside a SQLite store; the server decides otherwise."""
        uri = self.tracking_uri
        if uri.startswith("sqlite:///"):
            return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
        return None
