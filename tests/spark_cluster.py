"""Session fixture: a real Spark standalone cluster (master, worker, history server) from pyspark itself."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.processes import free_port
from services.spark.cluster import SparkCluster


def spark_cluster_on_free_ports(data_dir: Path, workers: int = 1) -> SparkCluster:
    """A cluster as `btcflow spark` runs it for BTCFLOW_DATA_DIR=`data_dir`, on free ports."""
    home = data_dir / "spark"
    return SparkCluster(
        home,
        (home / "events").resolve().as_uri(),
        workers=workers,
        cores=2,
        memory="2g",
        port=free_port(),
        ui_port=free_port(),
        worker_ui_port=free_port(),
        history_port=free_port(),
    )


def spark_env(cluster: SparkCluster) -> dict[str, str]:
    """The environment that points `btcflow spark ...` at `cluster` (its data dir and ports)."""
    return {
        **os.environ,
        "BTCFLOW_DATA_DIR": str(cluster.home.parent),
        "BTCFLOW_SPARK_PORT": str(cluster.port),
        "BTCFLOW_SPARK_UI_PORT": str(cluster.ui_port),
        "BTCFLOW_SPARK_WORKER_UI_PORT": str(cluster.worker_ui_port),
        "BTCFLOW_SPARK_HISTORY_PORT": str(cluster.history_port),
        "BTCFLOW_SPARK_EVENT_DIR": cluster.event_uri,
    }


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    """One master, one worker (2 cores, 2g) and the history server for the session, always stopped.

    Tests train on `.master_url`, write event logs to `.event_uri` and ask `.history_url`.
    """
    cluster = spark_cluster_on_free_ports(tmp_path_factory.mktemp("spark-cluster") / "data")
    try:
        cluster.start(timeout_s=180)
        yield cluster
    finally:
        cluster.stop()
