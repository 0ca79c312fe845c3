"""Session fixture: a real HDFS cluster (a NameNode and 2 DataNodes) from Apache Hadoop's own jars."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.hdfs.cluster import HdfsCluster
from services.hdfs.settings import HdfsSettings
from services.processes import free_port


def hdfs_cluster_on_free_ports(data_dir: Path, host: str = "127.0.0.1") -> HdfsCluster:
    """A cluster as `btcflow hdfs` runs it for BTCFLOW_DATA_DIR=`data_dir`, on free ports of `host`."""
    return HdfsCluster(
        data_dir / "hdfs",
        HdfsSettings().jars,
        host=host,
        port=free_port(host),
        http_port=free_port(host),
    )


def hdfs_env(cluster: HdfsCluster) -> dict[str, str]:
    """The environment that points `btcflow hdfs ...` at `cluster` (its data dir, host and ports)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTCFLOW_HDFS_")}
    return env | {
        "BTCFLOW_DATA_DIR": str(cluster.home.parent),
        "BTCFLOW_HDFS_HOST": cluster.host,
        "BTCFLOW_HDFS_PORT": str(cluster.port),
        "BTCFLOW_HDFS_HTTP_PORT": str(cluster.http_port),
        "BTCFLOW_HDFS_JARS": str(cluster.jars_dir),
    }


@pytest.fixture(scope="session")
def hdfs_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HdfsCluster]:
    """A NameNode and 2 DataNodes (256m heap each, replication 2) for the session, always stopped.

    Tests reach it at `.address` with `hdfs_native.Client(cluster.address, config=cluster.client_config)`,
    kill a daemon with `.datanode(i).kill()` or `.namenode.kill()` and bring it back with `.start()`; a
    test that kills one restarts it before it ends, so the next one finds the whole cluster.
    """
    cluster = hdfs_cluster_on_free_ports(tmp_path_factory.mktemp("hdfs-cluster") / "data")
    try:
        cluster.start(datanodes=2, timeout_s=180)
        yield cluster
    finally:
        cluster.stop()
