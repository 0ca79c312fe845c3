"""The whole ingest on the session's 3-node cluster, as the README shows it: `btcflow produce --workers 4`
and three `btcflow consume` members of one group, with a broker (the leader of partition 0) and a
member SIGKILLed along the way; the batch files hold every row of the file exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pandas as pd
from kafka import KafkaConsumer, TopicPartition

from pipeline.broker import ensure_topic, partition_leader
from pipeline.store import read_manifest
from pipeline.synth import synth
from services.kafka.cluster import EmbeddedCluster
from tests.pipeline.ingest import (
    BTCFLOW,
    assert_contiguous,
    assert_exactly,
    consume_cli,
    read_batches,
    start_live,
    wait_for_batches,
)


def wait_for_messages(bootstrap: str, tp: TopicPartition, count: int, timeout_s: float = 120) -> None:
    watcher = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + timeout_s
        while watcher.end_offsets([tp])[tp] < count and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        watcher.close()


def test_a_broker_and_a_member_killed_mid_run_lose_and_duplicate_nothing(
    kafka_cluster: EmbeddedCluster, tmp_path: Path
) -> None:
    bootstrap, topic = kafka_cluster.bootstrap, f"test-{uuid.uuid4().hex[:12]}"
    path, out = tmp_path / "btc.csv", tmp_path / "batches"
    synth(150_000, path, seed=3)
    ensure_topic(bootstrap, topic, partitions=4)
    env = {**os.environ, "BTCFLOW_KAFKA_BOOTSTRAP": bootstrap, "BTCFLOW_TOPIC": topic}
    # members end on their idle timeout, after the last row (a member that ends early only hands its
    # partitions on, and what it left is the sweep's): 15 s outlasts the failover's stall with room to spare
    args = ["--out", str(out), "--group", topic, "--batch-rows", "10000", "--idle-timeout", "15"]
    members = [start_live(env, args) for _ in range(3)]
    producer = subprocess.Popen(
        [*BTCFLOW, "produce", "--input", str(path), "--workers", "4", "--rate", "12000", "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_messages(bootstrap, TopicPartition(topic, 0), 5_000)
        leader = partition_leader(bootstrap, topic, 0)
        kafka_cluster.node(leader).kill()  # the leader of partition 0, maybe the group's coordinator too
        landed = wait_for_batches(out, 1)
        members[0].send_signal(signal.SIGKILL)  # a member dies with an open batch
        wait_for_batches(out, landed + 2)
        kafka_cluster.start()  # the broker comes back
        sent, errors = producer.communicate(timeout=300)
        assert producer.returncode == 0, errors
        assert "sent 150,000 rows, rejected 0" in sent
        for member in members[1:]:
            _, err = member.communicate(timeout=300)
            assert member.returncode == 0, err[-2000:]
    finally:
        kafka_cluster.start()  # later tests find three nodes
        for proc in (producer, *members):
            proc.kill()
    listed = sum(e.rows for e in read_manifest(out))
    print(f"the members wrote {listed:,} rows of 150,000")
    if listed < 150_000:  # rows the members left: a sweep reads them
        sweep = subprocess.run(
            consume_cli(*args[:-2], "--idle-timeout", "8"), env=env, capture_output=True, text=True
        )
        assert sweep.returncode == 0, sweep.stderr
    entries, got = read_batches(out)
    assert {p for e in entries for p in e.offsets} == {"0", "1", "2", "3"}
    assert_contiguous(entries)
    assert_exactly(pd.read_csv(path, float_precision="round_trip").to_numpy(), got)
