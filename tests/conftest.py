"""Fixtures shared by every test package: real Kafka once per session (broker, 3-node cluster), new names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import jvm
from pipeline.settings import PipelineSettings
from services.kafka.cluster import EmbeddedBroker, EmbeddedCluster
from services.kafka.launcher import free_port_block, free_port_pair

REPO = Path(__file__).resolve().parents[1]
KAGGLE_SAMPLE = REPO.parent / "shared" / "data" / "kaggle_head_10k.csv"

# Every JVM the suite starts (Kafka, HDFS, Spark's daemons, drivers and executors), and those of the btcflow
# commands it runs, lives seconds to minutes: C1 alone compiles what they run at half the CPU that C1 then
# C2 spend, and C2's faster code never pays back in so short a life (the local demo: 109 s of CPU, 74 s
# with C1 alone). C1 alone gets a 48 MB code cache, which a Spark driver fills ("CodeCache is full.
# Compiler has been disabled."): 240 MB, tiered compilation's own. Exported before any test starts a
# process, so every child inherits it; set BTCFLOW_JVM_OPTS (even empty) to run the suite otherwise.
os.environ.setdefault(jvm.ENV, "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m")

# session services of their own: the Spark standalone cluster, the MLflow tracking server, HDFS
pytest_plugins = ["tests.spark_cluster", "tests.tracking_server", "tests.hdfs_cluster"]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real single-node KRaft broker on a free port, started once per session; yields its address."""
    home = tmp_path_factory.mktemp("kafka")
    broker = EmbeddedBroker(home, PipelineSettings().kafka_jars, port=free_port_pair(), heap="512m")
    address = broker.start(timeout_s=120)
    yield address
    broker.stop()


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    """A real 3-node KRaft cluster (512m heap each) on a free port block, started once per session.

    Tests use `.bootstrap`, kill a node with `.node(i).kill()` and bring it back with `.start()`;
    a test that kills a node restarts it before it ends, so the next one finds three. At the end its
    nodes are SIGKILLed: their storage is thrown away, and three nodes stopping at once take ~6 s to
    shut down cleanly (tests/pipeline/test_cluster.py checks that stop through the CLI).
    """
    home = tmp_path_factory.mktemp("kafka-cluster")
    cluster = EmbeddedCluster(
        home, PipelineSettings().kafka_jars, nodes=3, port=free_port_block(6), heap="512m"
    )
    try:
        cluster.start(timeout_s=180)
        yield cluster
    finally:
        for node in cluster.members:
            node.kill()


@pytest.fixture
def topic() -> str:
    """A fresh topic name per test (the broker is shared by the session)."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(kafka_broker: str, topic: str, tmp_path: Path) -> PipelineSettings:
    """Pipeline settings pointing at the session broker, a fresh topic and a temporary data dir."""
    return PipelineSettings(kafka_bootstrap=kafka_broker, topic=topic, data_dir=tmp_path / "data")


@pytest.fixture
def kaggle_sample() -> Path:
    if not KAGGLE_SAMPLE.exists():
        pytest.skip(f"{KAGGLE_SAMPLE} not found (it comes with shared/)")
    return KAGGLE_SAMPLE
