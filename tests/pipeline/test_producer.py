"""The producer against the real session broker: round trip, real Kaggle sample, DLQ, pacing, failures."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

import pipeline.records as records
from core.errors import BrokerUnavailable
from pipeline.producer import Pacing, produce
from pipeline.settings import PipelineSettings
from pipeline.synth import synth
from services.kafka.launcher import free_port_pair
from tests.environment import without_settings

BTCFLOW = [sys.executable, "-m", "btcflow.cli"]
FIELDS = ("Timestamp", "Open", "High", "Low", "Close", "Volume")


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    """Every record of `topic`, from the start, once `expected` arrived (or the timeout passed)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=100_000).values():
                records.extend(batch)
        # a short extra poll: more than expected must show up too
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def expected_messages(path: Path) -> list[tuple[bytes, dict]]:
    lines = path.read_bytes().splitlines()[1:]
    out = []
    for line in lines:
        fields = line.split(b",")
        out.append((fields[0], dict(zip(FIELDS, map(float, fields), strict=True))))
    return out


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk-appender", "send-per-row"])
def test_round_trip_keys_and_values_exact(settings: PipelineSettings, tmp_path: Path, bulk: bool) -> None:
    path = tmp_path / "btc.csv"
    synth(6_000, path, seed=5)  # ~650 KB of records: several 256 KB batches
    summary = produce(settings, path, progress=False, bulk=bulk)
    assert (summary.sent, summary.rejected) == (6_000, 0)
    records = read_topic(settings.bootstrap, settings.topic, 6_000)
    got = [(r.key, orjson.loads(r.value)) for r in records]
    assert got == expected_messages(path)  # every row once, in file order, exact values
    assert records[0].key == b"1325412060.0"
    assert records[0].value.startswith(b'{"Timestamp":1325412060.0,"Open":4.58,')


def test_the_real_kaggle_sample_goes_through_in_full(settings: PipelineSettings, kaggle_sample: Path) -> None:
    summary = produce(settings, kaggle_sample, progress=False)
    assert (summary.sent, summary.rejected) == (9_999, 0)
    records = read_topic(settings.bootstrap, settings.topic, 9_999)
    assert [(r.key, orjson.loads(r.value)) for r in records] == expected_messages(kaggle_sample)


def test_each_bad_row_goes_to_the_dlq_with_its_reason(settings: PipelineSettings, tmp_path: Path) -> None:
    path = tmp_path / "dirty.csv"
    path.write_bytes(
        b"Timestamp,Open,High,Low,Close,Volume\r\n"
        b"1325412060.0,4.58,4.58,4.58,4.58,0.0\r\n"  # line 2: good
        b"1325412120.0,4.58,4.58,4.58\r\n"  # 3: wrong field count
        b"1325412180.0,,4.58,4.58,4.58,1\r\n"  # 4: empty
        b"1325412240.0,4.58,x,4.58,4.58,1\r\n"  # 5: non-numeric
        b"1325412300,NaN,NaN,NaN,NaN,NaN\r\n"  # 6: NaN (old Kaggle files)
        b"1325412360.0,4.58,4.58,4.58,4.58,inf\r\n"  # 7: infinite
        b"1325412420.0,-4.58,4.58,4.58,4.58,1\r\n"  # 8: negative price
        b"1325412480.0,4.58,4.58,4.58,4.58,-1\r\n"  # 9: negative volume
        b"1325412540.0,4.58,4.50,4.60,4.58,1\r\n"  # 10: High below Low
        b"1325412060.0,4.58,4.58,4.58,4.58,1\r\n"  # 11: Timestamp goes back
        b"1325412600,4.60,4.61,4.59,4.60,2.5\r\n"  # 12: good, integer timestamp
    )
    summary = produce(settings, path, progress=False)
    assert (summary.sent, summary.rejected) == (2, 9)
    good = read_topic(settings.bootstrap, settings.topic, 2)
    assert [r.key for r in good] == [b"1325412060.0", b"1325412600"]
    dead = [orjson.loads(r.value) for r in read_topic(settings.bootstrap, f"{settings.topic}.dlq", 9)]
    assert [(d["line"], d["reason"].split(":")[0]) for d in dead] == [
        (3, "wrong field count"),
        (4, "empty field"),
        (5, "non-numeric field"),
        (6, "NaN field"),
        (7, "infinite field"),
        (8, "negative Open"),
        (9, "negative Volume"),
        (10, "High below Low"),
        (11, "Timestamp not after the previous row's"),
    ]
    assert dead[0]["raw"] == "1325412120.0,4.58,4.58,4.58"
    assert dead[3] == {"line": 6, "raw": "1325412300,NaN,NaN,NaN,NaN,NaN", "reason": "NaN field: Open"}


def test_limit_stops_after_n_rows(settings: PipelineSettings, kaggle_sample: Path) -> None:
    summary = produce(settings, kaggle_sample, pacing=Pacing(limit=1_234), progress=False)
    assert summary.sent == 1_234
    assert len(read_topic(settings.bootstrap, settings.topic, 1_234, timeout_s=10)) == 1_234


def test_rate_holds_the_pace(settings: PipelineSettings, kaggle_sample: Path) -> None:
    summary = produce(settings, kaggle_sample, pacing=Pacing(rate=500, limit=300), progress=False)
    assert summary.sent == 300
    assert summary.seconds >= 300 / 500 * 0.9  # rows were held back, not sent in one burst


def test_workers_send_slices_to_their_own_partitions(settings: PipelineSettings, tmp_path: Path) -> None:
    path = tmp_path / "btc.csv"
    synth(5_000, path, seed=9)
    # a bad row in the second half: its line number must be exact though another process read it
    expected = [m[0] for i, m in enumerate(expected_messages(path)) if i != 3_999]
    lines = path.read_bytes().splitlines(keepends=True)
    lines[4_000] = b"oops\n"  # line 4001 of the file
    path.write_bytes(b"".join(lines))
    summary = produce(settings, path, workers=2, progress=False)
    assert (summary.sent, summary.rejected) == (4_999, 1)
    records = read_topic(settings.bootstrap, settings.topic, 4_999)
    assert {r.partition for r in records} == {0, 1}
    for partition in (0, 1):
        stamps = [float(r.key) for r in records if r.partition == partition]
        assert stamps == sorted(stamps)  # file order inside each partition
    assert sorted(r.key for r in records) == sorted(expected)
    dead = read_topic(settings.bootstrap, f"{settings.topic}.dlq", 1)
    assert orjson.loads(dead[0].value) == {
        "line": 4001,
        "raw": "oops",
        "reason": "wrong field count: 1 (expected 6)",
    }


def cli_env(**extra: str) -> dict[str, str]:
    env = without_settings("BTCFLOW_")
    return {**env, **extra}


def test_cli_with_a_closed_port_exits_3_with_one_line(kaggle_sample: Path) -> None:
    port = free_port_pair()
    started = time.monotonic()
    done = subprocess.run(
        [*BTCFLOW, "produce", "--input", str(kaggle_sample)],
        env=cli_env(BTCFLOW_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("btcflow: error: Kafka not reachable"), done.stderr
    assert time.monotonic() - started < 60  # within seconds, not minutes: CI has 2 busy cores


def test_cli_sigterm_flushes_and_prints_the_summary(
    kafka_broker: str, topic: str, kaggle_sample: Path
) -> None:
    proc = subprocess.Popen(
        [
            *BTCFLOW,
            "produce",
            "--input",
            str(kaggle_sample),
            "--topic",
            topic,
            "--rate",
            "300",
            "--no-progress",
        ],
        env=cli_env(BTCFLOW_KAFKA_BOOTSTRAP=kafka_broker),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not read_topic(kafka_broker, topic, 1, timeout_s=1) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
        time.sleep(1)  # rows are flowing: stop it in the middle of the file
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("sent ") and "rows/s" in summary
    sent = int(summary.split()[1].replace(",", ""))
    assert 0 < sent < 9_999
    assert len(read_topic(kafka_broker, topic, sent, timeout_s=10)) == sent  # everything counted was flushed


def test_cli_synth_then_produce_with_jitter_and_limit(kafka_broker: str, topic: str, tmp_path: Path) -> None:
    path = tmp_path / "btc.csv"
    env = cli_env(BTCFLOW_KAFKA_BOOTSTRAP=kafka_broker)
    made = subprocess.run(
        [*BTCFLOW, "data", "synth", "--rows", "500", "--out", str(path), "--seed", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    sent = subprocess.run(
        [*BTCFLOW, "produce", "--input", str(path), "--topic", topic, "--jitter", "0:2", "--limit", "100"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("sent 100 rows, rejected 0, in ")
    assert len(read_topic(kafka_broker, topic, 100, timeout_s=10)) == 100


def test_bad_jitter_and_missing_file_exit_2(tmp_path: Path) -> None:
    for args in (["--jitter", "9:1"], ["--jitter", "fast"]):
        done = subprocess.run(
            [*BTCFLOW, "produce", "--input", str(tmp_path / "x.csv"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env(),
        )
        assert done.returncode == 2 and "--jitter" in done.stderr
    done = subprocess.run(
        [*BTCFLOW, "produce", "--input", str(tmp_path / "missing.csv")],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert done.returncode == 2 and "input file not found" in done.stderr


def test_without_the_bulk_path_every_row_goes_through_send_once(
    settings: PipelineSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another kafka-python version: `supported()` says no and the real producer uses `send`."""
    monkeypatch.setattr(records, "KAFKA_PYTHON", "0.0.0")

    def never(*args: object) -> None:
        raise AssertionError("the bulk path ran on an unsupported kafka-python")

    monkeypatch.setattr(records.BulkAppender, "append", never)
    path = tmp_path / "btc.csv"
    synth(6_000, path, seed=7)
    summary = produce(settings, path, progress=False)
    assert (summary.sent, summary.rejected) == (6_000, 0)
    records_read = read_topic(settings.bootstrap, settings.topic, 6_000)
    assert [(r.key, orjson.loads(r.value)) for r in records_read] == expected_messages(path)


def create_topic(bootstrap: str, topic: str, max_message_bytes: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": str(max_message_bytes)})]
        )
    finally:
        admin.close()


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk-appender", "send-per-row"])
def test_batches_split_by_kafka_python_deliver_every_row_once(
    settings: PipelineSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture, bulk: bool
) -> None:
    """A topic taking 4 KB per batch: kafka-python splits our 256 KB batches again and again."""
    create_topic(settings.bootstrap, settings.topic, 4_096)
    path = tmp_path / "btc.csv"
    synth(8_000, path, seed=8)
    with caplog.at_level(logging.WARNING, logger="kafka.producer.sender"):
        summary = produce(settings, path, progress=False, bulk=bulk)
    assert any("splitting batch" in r.getMessage() for r in caplog.records)  # it really happened
    assert (summary.sent, summary.rejected) == (8_000, 0)
    got = read_topic(settings.bootstrap, settings.topic, 8_000)
    assert [(r.key, orjson.loads(r.value)) for r in got] == expected_messages(path)


def test_a_record_too_large_even_alone_fails_the_run_loudly(
    settings: PipelineSettings, tmp_path: Path
) -> None:
    """Split down to one record and still refused: the run stops with one line, never a silent loss."""
    create_topic(settings.bootstrap, settings.topic, 64)
    path = tmp_path / "btc.csv"
    synth(3_000, path, seed=8)
    with pytest.raises(BrokerUnavailable, match="MessageSizeTooLarge.*rerun with --resume"):
        produce(settings, path, progress=False)
