"""The embedded single-node broker (a one-node cluster): real JVM, real ports."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from pipeline.broker import ensure_topic
from pipeline.settings import PipelineSettings
from services.kafka.cluster import EmbeddedBroker
from services.kafka.launcher import free_port_pair


def test_topic_is_created_with_the_partition_count_asked(kafka_broker: str, topic: str) -> None:
    assert ensure_topic(kafka_broker, topic, partitions=3) == 3
    # an existing topic keeps its own count
    assert ensure_topic(kafka_broker, topic, partitions=1) == 3


def test_start_is_idempotent_and_stop_is_clean(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "k", PipelineSettings().kafka_jars, port=free_port_pair(), heap="256m")
    try:
        address = broker.start(timeout_s=120)
        assert broker.status().running
        assert broker.start(timeout_s=30) == address  # second start: same broker
        assert broker.log_file == tmp_path / "k" / "node-1" / "broker.log"
        assert broker.log_file.stat().st_size > 0
    finally:
        assert broker.stop()
    assert not broker.status().running
    assert not broker.stop()


def test_start_refuses_a_port_taken_by_something_else(kafka_broker: str, tmp_path: Path) -> None:
    port = int(kafka_broker.rsplit(":", 1)[1])
    cli = [sys.executable, "-m", "btcflow.cli", "broker", "start", "--timeout", "10"]
    env = {"BTCFLOW_BROKER_PORT": str(port), "BTCFLOW_BROKER_DIR": str(tmp_path / "other"), "PATH": ""}
    started = time.monotonic()
    done = subprocess.run(cli, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 3
    assert f"port {port}" in done.stderr and "taken" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 60  # within seconds, not minutes: CI has 2 busy cores


def test_cluster_ids_are_kafka_uuids_the_storage_tool_accepts() -> None:
    from services.kafka.cluster import new_cluster_id

    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
