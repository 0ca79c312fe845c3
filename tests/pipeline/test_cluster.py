"""The embedded 3-node cluster: replicated topics, status, the CLI, a partition leader killed mid-replay."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from core.errors import BadInput
from pipeline.broker import ensure_topic, partition_leader
from pipeline.producer import ProduceSummary, produce
from pipeline.settings import PipelineSettings
from pipeline.synth import synth
from services.kafka.admin import admin_client
from services.kafka.cluster import EmbeddedCluster
from services.kafka.launcher import free_port_block
from tests.environment import without_settings
from tests.waiting import wait_until

BTCFLOW = [sys.executable, "-m", "btcflow.cli"]
FIELDS = ("Timestamp", "Open", "High", "Low", "Close", "Volume")


def cli_env(cluster: EmbeddedCluster) -> dict[str, str]:
    """The CLI pointed at the session cluster's home and ports, so it starts nothing new."""
    env = without_settings("BTCFLOW_")
    return env | {"BTCFLOW_BROKER_DIR": str(cluster.home), "BTCFLOW_BROKER_PORT": str(cluster.port)}


def btcflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BTCFLOW, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


def end_offset(consumer: KafkaConsumer, tp: TopicPartition) -> int:
    return int(consumer.end_offsets([tp])[tp])


def test_a_topic_gets_three_replicas_and_min_insync_two(kafka_cluster: EmbeddedCluster, topic: str) -> None:
    assert ensure_topic(kafka_cluster.bootstrap, topic, partitions=2) == 2
    admin = admin_client(kafka_cluster.bootstrap)
    try:
        # the answering broker may not have the new topic's metadata yet
        partitions = wait_until(
            lambda: admin.describe_topics([topic])[0]["partitions"], 15, f"{topic}'s partitions", every_s=0.2
        )
        assert [sorted(p["replica_nodes"]) for p in partitions] == [[1, 2, 3], [1, 2, 3]]
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        assert configs["topic"][topic]["min.insync.replicas"]["value"] == "2"
    finally:
        admin.close()
    assert partition_leader(kafka_cluster.bootstrap, topic, 1) in {1, 2, 3}


def test_status_lists_every_node_and_the_active_controller(kafka_cluster: EmbeddedCluster) -> None:
    state = kafka_cluster.status()
    assert [n.name for n in state.nodes] == ["node 1", "node 2", "node 3"]
    assert state.running and all(n.pid for n in state.nodes)
    assert state.controller in {1, 2, 3}
    text = state.describe()
    assert f"active controller: node {state.controller}" in text
    marked = [line for line in text.splitlines() if line.endswith("(active controller)")]
    assert len(marked) == 1 and f"node {state.controller} " in marked[0]
    for n in kafka_cluster.members:
        assert n.address in text and n.log_file.stat().st_size > 0 and n.dir.parent == kafka_cluster.home


def test_cli_start_is_idempotent_status_lists_nodes_stop_stops_them(kafka_cluster: EmbeddedCluster) -> None:
    env = cli_env(kafka_cluster)
    pids = [n.pid for n in kafka_cluster.members]
    try:
        done = btcflow(env, "broker", "start", "--nodes", "3")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == kafka_cluster.bootstrap
        assert [n.pid for n in kafka_cluster.members] == pids  # nothing restarted

        done = btcflow(env, "broker", "status")
        assert done.returncode == 0, done.stderr
        assert "3-node Kafka cluster" in done.stdout and "active controller: node" in done.stdout
        rows = [line.split() for line in done.stdout.splitlines()]
        for n in kafka_cluster.members:
            assert ["node", str(n.node_id), n.address, "pid", str(n.pid)] in [r[:5] for r in rows]

        refused = btcflow(env, "broker", "start", "--nodes", "2")  # the home holds 3 nodes
        assert refused.returncode == 2
        assert len(refused.stderr.strip().splitlines()) == 1
        assert "3-node" in refused.stderr and "BTCFLOW_BROKER_DIR" in refused.stderr

        done = btcflow(env, "broker", "stop")
        assert (done.returncode, done.stdout.strip()) == (0, "cluster stopped")
        assert not any(n.pid for n in kafka_cluster.members)
        done = btcflow(env, "broker", "status")
        assert done.returncode == 3 and done.stdout.count("not running") == 3

        # a cold start through the CLI (--nodes omitted: the setting decides) brings the same cluster back
        done = btcflow(env | {"BTCFLOW_BROKER_NODES": "3"}, "broker", "start", "--timeout", "180")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == kafka_cluster.bootstrap
    finally:
        kafka_cluster.start(timeout_s=180)
    assert kafka_cluster.status().running


def test_every_row_lands_once_in_order_when_the_partition_leader_is_killed(
    kafka_cluster: EmbeddedCluster, topic: str, tmp_path: Path
) -> None:
    source = tmp_path / "rows.csv"
    synth(300_000, source, seed=11)
    bootstrap = kafka_cluster.bootstrap
    settings = PipelineSettings(kafka_bootstrap=bootstrap, topic=topic, data_dir=tmp_path / "data")
    ensure_topic(bootstrap, topic, 1)
    leader = partition_leader(bootstrap, topic, 0)
    tp = TopicPartition(topic, 0)
    outcome: dict[str, ProduceSummary | BaseException] = {}

    def replay() -> None:
        try:
            outcome["summary"] = produce(settings, source, progress=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    watcher = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    producer = threading.Thread(target=replay, daemon=True)
    try:
        producer.start()
        while end_offset(watcher, tp) < 20_000 and producer.is_alive():
            time.sleep(0.05)
        landed_before_kill = end_offset(watcher, tp)
        killed_mid_stream = producer.is_alive()
        kafka_cluster.node(leader).kill()
        killed_at = time.monotonic()
        # the metadata names the dead node until the controller fences it and elects another
        while (new_leader := partition_leader(bootstrap, topic, 0, timeout_s=60)) == leader:
            assert time.monotonic() - killed_at < 120, f"node {leader} still leads 2 minutes after its death"
            time.sleep(0.2)
        elected_after = time.monotonic() - killed_at
        time.sleep(max(0.0, 8 - (time.monotonic() - killed_at)))  # the lapse under test: down 8 s at least
        kafka_cluster.start(timeout_s=180)
        producer.join(timeout=600)
    finally:
        watcher.close()
        kafka_cluster.start(timeout_s=180)  # later tests expect three nodes, whatever happened here
    print(
        f"killed node {leader} after {landed_before_kill:,} rows landed; "
        f"node {new_leader} led after {elected_after:.1f} s"
    )
    assert not producer.is_alive(), "the replay never finished"
    assert "error" not in outcome, repr(outcome.get("error"))
    assert killed_mid_stream, "the replay ended before the kill: the test proved nothing"
    assert new_leader != leader

    keys, values = read_partition(bootstrap, tp, 300_000)
    expected_keys, expected_values = file_rows(source)
    assert len(keys) == len(expected_keys) == 300_000
    assert keys == expected_keys  # every row exactly once, in file order
    assert values == expected_values


def read_partition(bootstrap: str, tp: TopicPartition, expected: int) -> tuple[list[bytes], list[dict]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = end_offset(consumer, tp)
        assert end == expected, f"the partition holds {end:,} records, not {expected:,}"
        keys: list[bytes] = []
        values: list[dict] = []
        deadline = time.monotonic() + 300
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=100_000).values():
                keys.extend(r.key for r in batch)
                values.extend(orjson.loads(r.value) for r in batch)
        return keys, values
    finally:
        consumer.close()


def file_rows(path: Path) -> tuple[list[bytes], list[dict]]:
    keys, values = [], []
    for line in path.read_bytes().splitlines()[1:]:
        fields = line.split(b",")
        keys.append(fields[0])
        values.append(dict(zip(FIELDS, map(float, fields), strict=True)))
    return keys, values


def test_a_home_formatted_for_another_node_count_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "kafka"
    home.mkdir()
    (home / "cluster.json").write_text(json.dumps({"nodes": 3, "cluster_id": "x"}))
    with pytest.raises(BadInput, match="holds a 3-node Kafka cluster, not 1: stop it"):
        EmbeddedCluster(home, tmp_path / "jars", nodes=1).start()
    assert not any(home.glob("node-*"))  # refused before anything was written


def test_free_port_block_is_free_end_to_end() -> None:
    base = free_port_block(6)
    for port in range(base, base + 6):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
