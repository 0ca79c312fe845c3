"""Several consumer processes of one group writing one dataset, against the real broker: members killed
and added (real rebalances), a partition added while the group runs, and the dataset's resume offsets
checked against the topic (recreated, or cut by retention) with the way out."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import NewPartitions

from pipeline.broker import delete_topic, ensure_topic
from pipeline.settings import PipelineSettings
from pipeline.store import read_manifest
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

IDLE_S = "10"


def member_env(settings: PipelineSettings) -> dict[str, str]:
    return {**os.environ, "BTCFLOW_KAFKA_BOOTSTRAP": settings.bootstrap, "BTCFLOW_TOPIC": settings.topic}


def finish(members: list[subprocess.Popen[str]], timeout_s: float = 240) -> list[str]:
    """Wait for members that stop on their own (idle timeout); their summary lines."""
    lines = []
    deadline = time.monotonic() + timeout_s
    for proc in members:
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            proc.kill()
        if proc.returncode != -signal.SIGKILL:
            assert proc.returncode == 0, err[-2000:]
            lines.append(out.strip().splitlines()[-1])
    return lines


@pytest.mark.parametrize("policy", [["--batch-rows", "5000"], ["--window", "1"]], ids=["rows", "window"])
def test_members_killed_and_added_still_write_every_row_once(
    settings: PipelineSettings, tmp_path: Path, policy: list[str]
) -> None:
    n = 120_000
    rows = make_rows(n)
    ensure_topic(settings.bootstrap, settings.topic, partitions=4)
    env, out = member_env(settings), tmp_path / "batches"
    args = ["--out", str(out), "--group", settings.topic, "--idle-timeout", IDLE_S, *policy]
    members = [start_live(env, args) for _ in range(3)]  # each returns once it holds partitions
    producer = threading.Thread(target=send, args=(settings.bootstrap, settings.topic, rows, 4))
    try:
        producer.start()
        wait_for_batches(out, 2)
        members[0].send_signal(signal.SIGKILL)  # its open batch dies with it; its partitions move on
        wait_for_batches(out, len(read_manifest(out)) + 2)  # mid-run: live members' files are half-written
        members.append(start_live(env, args))  # a member joins mid-run: another rebalance
        producer.join(timeout=300)
        summaries = finish(members)
    finally:
        for proc in members:
            proc.kill()
    if sum(e.rows for e in read_manifest(out)) < n:  # rows that members who ended early left: the sweep's
        sweep = subprocess.run(consume_cli(*args), env=env, capture_output=True, text=True, timeout=180)
        assert sweep.returncode == 0, sweep.stderr
    assert sum(int(line.split()[1].replace(",", "")) > 0 for line in summaries) >= 2  # the work was shared
    entries, got = read_batches(out)
    assert sum(e.rows for e in entries) == n
    assert_contiguous(entries)
    assert_exactly(rows, got)


def rows_listed(out: Path) -> int:
    return sum(e.rows for e in read_manifest(out)) if (out / "manifest.json").exists() else 0


def wait_for_rows(out: Path, rows: int, timeout_s: float = 240) -> int:
    """Poll the manifest until it lists `rows` rows (or the time is up); returns how many it lists."""
    deadline = time.monotonic() + timeout_s
    while (listed := rows_listed(out)) < rows and time.monotonic() < deadline:
        time.sleep(0.2)
    return listed


def test_a_partition_added_while_the_group_runs_is_read_too(
    settings: PipelineSettings, tmp_path: Path
) -> None:
    """Time windows close every batch within a second of its first row, so the manifest soon lists every
    row sent; the group is then stopped (SIGTERM, passed on to each member) instead of idling out."""
    ensure_topic(settings.bootstrap, settings.topic, partitions=2)
    first, later = make_rows(20_000), make_rows(10_000, start=20_000)
    send(settings.bootstrap, settings.topic, first, partitions=2)
    out = tmp_path / "batches"
    group = subprocess.Popen(
        consume_cli("--instances", "2", "--out", str(out), "--group", settings.topic, "--window", "1"),
        env=member_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for_rows(out, 20_000) == 20_000
        admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap)
        try:
            admin.create_partitions({settings.topic: NewPartitions(total_count=3)})
        finally:
            admin.close()
        send(settings.bootstrap, settings.topic, later, partitions=3)  # a third of it to the new partition
        wait_for_rows(out, 30_000)  # short of it, the assertions below say what is missing
        group.send_signal(signal.SIGTERM)
        stdout, stderr = group.communicate(timeout=120)
    finally:
        group.kill()
    assert group.returncode == 0, stderr
    assert [line.split(":")[0] for line in stdout.strip().splitlines()] == ["member 1", "member 2"]
    entries, got = read_batches(out)
    assert any("2" in e.offsets for e in entries)
    assert_contiguous(entries)
    assert_exactly(np.concatenate([first, later]), got)


def run_consume(
    settings: PipelineSettings, out: Path, *extra: str, rows: int = 100
) -> subprocess.CompletedProcess[str]:
    """One run that writes one batch of `rows` rows and stops at once (the idle timeout is only its way
    out when fewer come), or is refused at its assignment."""
    return subprocess.run(
        consume_cli("--out", str(out), "--batch-rows", str(rows), "--max-batches", "1", "--idle-timeout", "6")
        + list(extra),
        env=member_env(settings),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_recreated_topic_stops_with_one_line_unless_told_to_read_it_from_its_beginning(
    settings: PipelineSettings, tmp_path: Path
) -> None:
    out = tmp_path / "batches"
    send(settings.bootstrap, settings.topic, make_rows(100))
    assert run_consume(settings, out).returncode == 0
    delete_topic(settings.bootstrap, settings.topic)
    send(settings.bootstrap, settings.topic, make_rows(30, start=100))  # a new topic, offsets 0-29
    refused = run_consume(settings, out)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert f"partition 0 of {settings.topic}" in line and "resumes at offset 100" in line
    assert "deleted and recreated" in line and "offsets 0-29" in line and "--from-beginning" in line
    assert run_consume(settings, out, "--from-beginning", rows=30).returncode == 0
    entries, got = read_batches(out)
    assert [(e.rows, e.offsets) for e in entries] == [(100, {"0": [0, 99]}), (30, {"0": [0, 29]})]
    assert entries[0].topic_id != entries[1].topic_id
    assert_exactly(np.concatenate([make_rows(100), make_rows(30, start=100)]), got)
    send(settings.bootstrap, settings.topic, make_rows(1, start=130))
    assert run_consume(settings, out, rows=1).returncode == 0  # the dataset now follows the new topic
    last = read_manifest(out)[-1]
    assert (last.rows, last.offsets, last.topic_id) == (1, {"0": [30, 30]}, entries[1].topic_id)


def test_offsets_deleted_by_retention_stop_with_one_line_unless_the_gap_is_accepted(
    settings: PipelineSettings, tmp_path: Path
) -> None:
    out = tmp_path / "batches"
    send(settings.bootstrap, settings.topic, make_rows(100))
    assert run_consume(settings, out).returncode == 0
    send(settings.bootstrap, settings.topic, make_rows(100, start=100))  # offsets 100-199
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap)
    try:  # what retention does to a partition: its beginning moves past offsets nobody read
        admin.delete_records({TopicPartition(settings.topic, 0): 150})
    finally:
        admin.close()
    refused = run_consume(settings, out)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "partition 0" in line and "resumes at offset 100" in line and "begins at offset 150" in line
    assert run_consume(settings, out, "--from-beginning", rows=50).returncode == 0
    entries, got = read_batches(out)
    assert [e.offsets for e in entries] == [{"0": [0, 99]}, {"0": [150, 199]}]
    assert_exactly(np.concatenate([make_rows(100), make_rows(100, start=100)[50:]]), got)
