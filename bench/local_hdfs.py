"""A throwaway HDFS for the benchmarks: btcflow's own daemons (services.hdfs) in a temporary folder, on free
ports of 127.0.0.1; the caller stops it."""

from __future__ import annotations

from pathlib import Path

from services.hdfs.cluster import HdfsCluster
from services.hdfs.settings import HdfsSettings
from services.processes import free_port


def temporary_hdfs(folder: Path) -> HdfsCluster:
    """A cluster whose files go to `folder/hdfs`; `start(datanodes=N)` runs it."""
    return HdfsCluster(folder / "hdfs", HdfsSettings().jars, port=free_port(), http_port=free_port())
