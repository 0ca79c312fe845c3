"""The consumer group on HDFS, with the store failing under it: a DataNode SIGKILLed mid-ingest loses
nothing and stops no one (replication 2: the write pipeline goes on with the replica left); the NameNode
down stops the consumer with one line and exit 3, its offsets uncommitted, and a restart completes
exactly once. The session's HDFS cluster is restarted whole after each test (`start` is idempotent)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition

from core.storage import HdfsStorage
from pipeline.broker import ensure_topic
from pipeline.settings import PipelineSettings
from tests.pipeline.ingest import (
    assert_contiguous,
    assert_exactly,
    consume_cli,
    make_rows,
    read_batches,
    send,
    start_live,
    wait_for_batches,
)

BATCH_ROWS = 10_000


@pytest.fixture
def dataset(hdfs_cluster) -> HdfsStorage:  # noqa: ANN001 - tests.hdfs_cluster's session cluster
    return HdfsStorage(f"{hdfs_cluster.address}/ingest-{uuid.uuid4().hex[:8]}")


def _env(settings: PipelineSettings) -> dict[str, str]:
    return {**os.environ, "BTCFLOW_KAFKA_BOOTSTRAP": settings.bootstrap, "BTCFLOW_TOPIC": settings.topic}


def _committed(settings: PipelineSettings, group: str) -> int | None:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return consumer.committed(TopicPartition(settings.topic, 0))
    finally:
        consumer.close()


def test_a_datanode_killed_mid_ingest_loses_nothing(
    settings: PipelineSettings, dataset: HdfsStorage, hdfs_cluster
) -> None:  # noqa: ANN001
    n = 12 * BATCH_ROWS
    rows = make_rows(n)
    ensure_topic(settings.bootstrap, settings.topic)
    producer = threading.Thread(target=send, args=(settings.bootstrap, settings.topic, rows), daemon=True)
    producer.start()
    args = ["--out", dataset.uri, "--batch-rows", str(BATCH_ROWS), "--max-batches", "12"]
    proc = start_live(_env(settings), [*args, "--group", f"{settings.topic}-g", "--idle-timeout", "60"])
    try:
        assert wait_for_batches(dataset, 2, timeout_s=120) >= 2
        hdfs_cluster.datanode(1).kill()  # SIGKILL, mid-stream: writes in flight lose one replica
        _, stderr = proc.communicate(timeout=240)
    finally:
        proc.kill()
        hdfs_cluster.start()
    producer.join(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    entries, got = read_batches(dataset)
    assert [e.rows for e in entries] == [BATCH_ROWS] * 12
    assert_contiguous(entries)
    assert_exactly(rows, got)


def test_the_namenode_down_stops_the_consumer_and_a_restart_completes_exactly_once(
    settings: PipelineSettings, dataset: HdfsStorage, hdfs_cluster
) -> None:  # noqa: ANN001
    n = 6 * BATCH_ROWS
    rows = make_rows(n)
    send(settings.bootstrap, settings.topic, rows)
    group = f"{settings.topic}-g"
    args = ["--out", dataset.uri, "--batch-rows", str(BATCH_ROWS), "--group", group]
    proc = start_live(_env(settings), [*args, "--idle-timeout", "60"])
    try:
        listed = wait_for_batches(dataset, 1, timeout_s=120)
        hdfs_cluster.namenode.kill()
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=180)
        stopped_s = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGKILL)
        hdfs_cluster.start()
    assert proc.returncode == 3, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("btcflow: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert dataset.uri.split("//")[1].split("/")[0] in lines[0], lines[0]  # names the store
    assert stopped_s < 120
    entries = read_batches(dataset, temporaries_ok=True)[0]  # the NameNode died mid-commit
    assert len(entries) >= listed
    committed = _committed(settings, group)  # offsets follow the listed batches, never lead them
    assert committed is None or committed <= sum(e.rows for e in entries)
    again = subprocess.run(
        consume_cli(*args, "--max-batches", str(6 - len(entries)), "--idle-timeout", "30"),
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    entries, got = read_batches(dataset, temporaries_ok=True)
    assert sum(e.rows for e in entries) == n
    assert_contiguous(entries)
    assert_exactly(rows, got)
