"""The batching consumer against the real broker: exactly once, both policies, both formats, partitions,
bad messages, restarts (clean, SIGKILL, group offsets that disagree with the manifest)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaConnectionError
from kafka.structs import OffsetAndMetadata

import pipeline.consumer as consumer_module
from core.errors import BrokerUnavailable
from pipeline.batching import BatchPolicy
from pipeline.broker import ensure_topic
from pipeline.consumer import BatchingConsumer, consume
from pipeline.messages import parse_values
from pipeline.settings import PipelineSettings
from pipeline.store import COLUMNS, BatchStore, read_manifest
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

REPO = Path(__file__).resolve().parents[2]
IDLE_S = 8.0  # only ends runs whose rows are all on the topic already; short ones misfire on a busy machine
# Runs whose batch count is known end at --max-batches, the moment their last batch is written; IDLE_S is
# then only their way out when a row is missing (the assertions after them say which). Only the tail test
# waits on the idle timeout itself: closing the tail on idle is what it proves.


def test_parse_values_keeps_good_rows_and_says_why_the_others_are_not() -> None:
    good = orjson.dumps(dict(zip(COLUMNS, [1325412060.0, 4.58, 4.6, 4.5, 4.59, 0], strict=True)))
    as_text = good.replace(b"4.58", b'"4.58"')
    rows, bad = parse_values([good, good])
    assert rows.shape == (2, 6) and bad == [] and rows.dtype == np.float64
    values = [good, b"{nope", b"[1,2]", b'{"Timestamp": 1.0}', as_text, None, good.replace(b"4.6", b"true")]
    rows, bad = parse_values(values)
    assert rows.tolist() == [[1325412060.0, 4.58, 4.6, 4.5, 4.59, 0.0]]
    reasons = dict(bad)
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6]
    assert reasons[1].startswith("not JSON")
    assert "not a JSON object" in reasons[2]
    assert reasons[3] == "missing field Open"
    assert "Open is not a number" in reasons[4]
    assert "tombstone" in reasons[5]
    assert "High is not a number" in reasons[6]


def test_round_trip_by_count_closes_the_tail_on_idle_and_keeps_values(settings: PipelineSettings) -> None:
    rows = make_rows(2500)
    send(settings.bootstrap, settings.topic, rows)
    out = settings.batch_dir
    summary = consume(
        settings, out, batch_rows=1000, idle_timeout_s=IDLE_S, progress=False, group_id=settings.topic
    )
    entries, got = read_batches(out)
    assert [e.rows for e in entries] == [1000, 1000, 500]  # the tail is batch 3, not left behind
    assert (summary.rows, summary.batches, summary.rejected) == (2500, 3, 0)
    assert_contiguous(entries)
    assert entries[-1].offsets == {"0": [2000, 2499]}
    assert_exactly(rows, got)


def commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    """Set a group's committed offset for partition 0 from outside (the group must have no member)."""
    outsider = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        outsider.commit({TopicPartition(topic, 0): OffsetAndMetadata(offset, "", -1)})
    finally:
        outsider.close()


def test_max_batches_stops_and_the_manifest_beats_the_groups_committed_offsets(
    settings: PipelineSettings,
) -> None:
    rows = make_rows(4000)
    send(settings.bootstrap, settings.topic, rows)
    out, topic = settings.batch_dir, settings.topic
    first = consume(settings, out, batch_rows=1000, max_batches=2, progress=False, group_id=f"{topic}-a")
    assert first.batches == 2 and len(read_manifest(out)) == 2
    commit(settings.bootstrap, f"{topic}-behind", topic, 0)  # committed behind the manifest: no re-read
    consume(settings, out, batch_rows=1000, max_batches=1, progress=False, group_id=f"{topic}-behind")
    assert read_manifest(out)[-1].offsets == {"0": [2000, 2999]}
    commit(settings.bootstrap, f"{topic}-ahead", topic, 4000)  # committed ahead of it: no row skipped
    consume(
        settings,
        out,
        batch_rows=1000,
        max_batches=1,  # 3000-3999: the two runs before wrote three batches
        idle_timeout_s=IDLE_S,
        progress=False,
        group_id=f"{topic}-ahead",
    )
    entries, got = read_batches(out)
    assert [e.rows for e in entries] == [1000, 1000, 1000, 1000]
    assert_contiguous(entries)
    assert_exactly(rows, got)


def test_a_fresh_folder_gets_every_row_whatever_the_group_committed(settings: PipelineSettings) -> None:
    rows = make_rows(3000)
    send(settings.bootstrap, settings.topic, rows)
    group = f"{settings.topic}-used"
    commit(settings.bootstrap, group, settings.topic, 2000)  # a group that already read into another folder
    summary = consume(
        settings,
        settings.batch_dir,
        batch_rows=1000,
        max_batches=3,
        idle_timeout_s=IDLE_S,
        progress=False,
        group_id=group,
    )
    assert summary.rows == 3000
    entries, got = read_batches(settings.batch_dir)
    assert_contiguous(entries)  # from offset 0, not from the group's 2000
    assert_exactly(rows, got)


def test_window_policy_closes_a_batch_per_burst(settings: PipelineSettings) -> None:
    bursts = [make_rows(200, start=k * 200) for k in range(3)]
    out = settings.batch_dir
    done: list = []
    stop = threading.Event()  # set once every burst's batch is listed: an idle timeout would be waited out
    worker = threading.Thread(
        target=lambda: done.append(
            consume(settings, out, window_s=1.0, progress=False, group_id=settings.topic, stop=stop)
        )
    )
    ensure_topic(settings.bootstrap, settings.topic)
    # one producer for every burst (no start-up between them); each burst is one flushed record batch,
    # sent once the previous burst's batch is in the manifest: the bursts' spacing never rests on sleeps
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap, linger_ms=10_000, batch_size=512 * 1024, acks="all"
    )  # the flush, not the linger, sends each burst: one record batch, read in one poll
    worker.start()
    try:
        for k, burst in enumerate(bursts):
            for row in burst.tolist():
                value = orjson.dumps(dict(zip(COLUMNS, row, strict=True)))
                producer.send(settings.topic, key=repr(row[0]).encode(), value=value, partition=0)
            producer.flush(timeout=60)
            assert wait_for_batches(out, k + 1) == k + 1  # the window closed this burst's batch
    finally:
        producer.close(timeout=10)
        stop.set()
    worker.join(timeout=90)
    assert not worker.is_alive() and done
    entries, got = read_batches(out)
    assert [e.rows for e in entries] == [200, 200, 200]
    assert_contiguous(entries)
    assert_exactly(np.concatenate(bursts), got)


def test_csv_batches_read_back_as_the_kaggle_file_does(settings: PipelineSettings) -> None:
    rows = make_rows(1200)
    send(settings.bootstrap, settings.topic, rows)
    out = settings.batch_dir
    consume(
        settings,
        out,
        batch_rows=600,
        max_batches=2,
        idle_timeout_s=IDLE_S,
        fmt="csv",
        progress=False,
        group_id=settings.topic,
    )
    entries, got = read_batches(out)
    assert [e.file for e in entries] == ["batch_1.csv", "batch_2.csv"]
    assert (out / "batch_1.csv").read_text().splitlines()[:2][1].startswith("1325412060.0,")
    assert_exactly(rows, got)


def test_two_partitions_every_row_once_and_batches_sorted(settings: PipelineSettings) -> None:
    assert ensure_topic(settings.bootstrap, settings.topic, partitions=2) == 2
    rows = make_rows(3000)
    send(settings.bootstrap, settings.topic, rows, partitions=2)
    out = settings.batch_dir
    consume(
        settings,
        out,
        batch_rows=750,
        max_batches=4,
        idle_timeout_s=IDLE_S,
        progress=False,
        group_id=settings.topic,
    )
    entries, got = read_batches(out)  # checks each batch is sorted by Timestamp
    assert [e.rows for e in entries] == [750, 750, 750, 750]
    assert {p for e in entries for p in e.offsets} == {"0", "1"}
    assert_contiguous(entries)
    assert_exactly(rows, got)


def test_bad_messages_are_counted_and_kept_with_their_reason(settings: PipelineSettings) -> None:
    rows = make_rows(500)
    bad = [b"not json", b'{"Timestamp": 1.0}', None]
    send(settings.bootstrap, settings.topic, rows, extra=bad)
    send(settings.bootstrap, settings.topic, make_rows(100, start=500))
    out = settings.batch_dir
    summary = consume(
        settings,
        out,
        batch_rows=600,  # the good rows: the batch closes on its last one, offset 602
        max_batches=1,
        idle_timeout_s=IDLE_S,
        progress=False,
        group_id=settings.topic,
    )
    assert (summary.rows, summary.rejected) == (600, 3)
    entries, got = read_batches(out)
    assert entries[0].offsets == {"0": [0, 602]}  # the rejected offsets belong to the batch
    assert_exactly(np.concatenate([rows, make_rows(100, start=500)]), got)
    kept = BatchStore(out).rejected_messages()
    assert [(r["batch"], r["partition"], r["offset"]) for r in kept] == [
        (1, 0, 500),
        (1, 0, 501),
        (1, 0, 502),
    ]
    assert kept[0]["value"] == "not json" and kept[0]["reason"].startswith("not JSON")
    assert kept[1]["reason"] == "missing field Open"
    assert kept[2]["value"] is None and "tombstone" in kept[2]["reason"]


def test_sigkill_at_random_moments_then_restart_gives_every_row_exactly_once(
    settings: PipelineSettings, tmp_path: Path
) -> None:
    """Each run joins a group of its own: the dataset, not the group, says where a run resumes, and a run
    joining the group of a SIGKILLed one would first wait out its session (~10 s, every restart).
    Partitions moving on once a dead member's session lapses is what test_group.py's kills prove."""
    n = 240_000
    rows = make_rows(n)
    ensure_topic(settings.bootstrap, settings.topic)
    producer = threading.Thread(target=send, args=(settings.bootstrap, settings.topic, rows), daemon=True)
    producer.start()  # kills land while the topic is still being written, too
    env = {**os.environ, "BTCFLOW_KAFKA_BOOTSTRAP": settings.bootstrap, "BTCFLOW_TOPIC": settings.topic}
    out = tmp_path / "batches"
    args = ["--out", str(out), "--batch-rows", "20000"]
    runs = (["--group", f"{settings.topic}-run-{k}", *args] for k in range(100))
    rng = random.Random(7)
    kills = 0
    batches_at_kill: list[int] = []
    deadline = time.monotonic() + 300
    while kills < 4 and time.monotonic() < deadline:
        listed = wait_for_batches(out, 0)
        proc = start_live(env, next(runs))
        if kills % 2:  # timed from the manifest, not the clock: this run has closed a batch of its own
            wait_for_batches(out, listed + 1, timeout_s=60)
        time.sleep(rng.uniform(0.0, 1.5))  # then anywhere in the next batch, or in its write
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        kills += 1
        batches_at_kill.append(wait_for_batches(out, 0))
    # a clean stop keeps the open batch for the next run instead of writing it
    proc = start_live(env, next(runs))
    time.sleep(1.0)  # it reads rows into a batch it has not closed: nothing outside the process shows that
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and stdout.startswith("consumed ")
    producer.join(timeout=120)
    left = n // 20000 - wait_for_batches(out, 0)  # every batch is full: the rest is a known count
    final = subprocess.run(
        consume_cli(*next(runs), "--max-batches", str(max(left, 1)), "--idle-timeout", str(IDLE_S)),
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert final.returncode == 0, final.stderr
    assert kills == 4
    assert any(0 < b < n // 20000 for b in batches_at_kill), batches_at_kill  # kills landed mid-stream
    entries, got = read_batches(out)
    assert sum(e.rows for e in entries) == n
    assert all(e.rows == 20000 for e in entries)
    assert_contiguous(entries)
    assert_exactly(rows, got)


def test_closed_port_exits_3_with_one_line_within_seconds(tmp_path: Path) -> None:
    env = {**os.environ, "BTCFLOW_KAFKA_BOOTSTRAP": "127.0.0.1:9", "BTCFLOW_DATA_DIR": str(tmp_path)}
    started = time.monotonic()
    done = subprocess.run(
        consume_cli("--batch-rows", "10", "--idle-timeout", "1"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 3
    assert len(done.stderr.strip().splitlines()) == 1 and "127.0.0.1:9" in done.stderr
    assert time.monotonic() - started < 60  # within seconds, not minutes: CI has 2 busy cores


@pytest.mark.parametrize("args", [[], ["--batch-rows", "5", "--window", "2"]])
def test_exactly_one_policy_is_required(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "BTCFLOW_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        consume_cli(*args), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--batch-rows" in done.stderr


def test_kaggle_sample_through_the_real_producer_lands_once_with_equal_values(
    settings: PipelineSettings, kaggle_sample: Path
) -> None:
    from pipeline.producer import produce

    sent = produce(settings, kaggle_sample, progress=False)
    out = settings.batch_dir
    size = -(-sent.sent // 3)  # three batches, the last one full when the count divides (9,999 rows do)
    summary = consume(
        settings,
        out,
        batch_rows=size,
        max_batches=3,
        idle_timeout_s=IDLE_S,
        progress=False,
        group_id=settings.topic,
    )
    assert summary.rows == sent.sent and summary.rejected == 0
    entries, got = read_batches(out)
    assert [e.rows for e in entries] == [size, size, sent.sent - 2 * size]
    assert_contiguous(entries)
    expected = pd.read_csv(kaggle_sample, float_precision="round_trip").dropna().to_numpy()
    assert_exactly(expected, got)


def test_a_kafka_error_inside_the_loop_is_broker_unavailable(
    settings: PipelineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kafka-python raises from poll (or offset lookups) once its own retries give up: exit 3, one line."""
    send(settings.bootstrap, settings.topic, make_rows(10))
    real_open = consumer_module.open_consumer

    def failing_open(*args: object, **kwargs: object) -> KafkaConsumer:
        consumer = real_open(*args, **kwargs)  # type: ignore[arg-type]
        real_poll, calls = consumer.poll, []

        def poll(*a: object, **kw: object) -> object:
            calls.append(1)
            if len(calls) > 1:  # after the join and the first records: mid-run
                raise KafkaConnectionError("connection reset")
            return real_poll(*a, **kw)

        consumer.poll = poll  # type: ignore[method-assign]
        return consumer

    monkeypatch.setattr(consumer_module, "open_consumer", failing_open)
    with pytest.raises(BrokerUnavailable, match="failed while consuming: KafkaConnectionError") as caught:
        consume(settings, settings.batch_dir, batch_rows=100, idle_timeout_s=60, progress=False)
    assert caught.value.exit_code == 3 and "\n" not in str(caught.value)


def test_messages_dropped_by_a_rebalance_are_not_counted_twice(settings: PipelineSettings) -> None:
    """After an assignment change the open batch is dropped and read again: its rows and rejects must
    not stay in the counts (they would be counted a second time when read again)."""
    send(settings.bootstrap, settings.topic, make_rows(50), extra=[b"not json", None])
    reader = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    tp = TopicPartition(settings.topic, 0)
    reader.assign([tp])
    reader.seek_to_beginning(tp)
    try:
        polled: dict = {}
        deadline = time.monotonic() + 60
        while sum(map(len, polled.values())) < 52 and time.monotonic() < deadline:
            for key, records in reader.poll(timeout_ms=500).items():
                polled.setdefault(key, []).extend(records)
        store = BatchStore(settings.batch_dir)
        batcher = BatchingConsumer(settings, store, BatchPolicy(batch_rows=1000), settings.topic)
        batcher._take(polled)
        assert (batcher.rows_read, batcher.rejected) == (50, 2)
        batcher._resync(reader)  # a rebalance: the open batch is someone else's now
        assert (batcher.rows_read, batcher.rejected, batcher.batch.rows) == (0, 0, 0)
        assert reader.position(tp) == 0  # sought back: they will be read, and counted, again
    finally:
        reader.close()
