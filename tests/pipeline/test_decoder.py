"""The bulk record-batch decoder: the same (offset, key, value) as kafka-python's own decoding, on
batches built here and on batches fetched from the real broker (compressed or not, several partitions,
headers, tombstones, transactions), the same positions, and the same batch files from the consumer."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import kafka
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

import pipeline.decoder as decoder
from pipeline.batching import BatchPolicy
from pipeline.broker import ensure_topic
from pipeline.consumer import BatchingConsumer
from pipeline.settings import PipelineSettings
from pipeline.store import BatchStore, read_manifest
from tests.pipeline.ingest import make_rows, send

CODECS = {"none": 0, "gzip": 1, "lz4": 3}


def built_batch(records: list[tuple[int, bytes | None, bytes | None, list]], codec: int = 0) -> bytes:
    """One record batch as kafka-python's own builder writes it: (timestamp, key, value, headers)."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 24,
    )
    for offset, (ts, key, value, headers) in enumerate(records):
        builder.append(offset * 7, ts, key, value, headers)  # gaps: offset deltas of several bytes
    return bytes(builder.build())


def theirs(data: bytes) -> list[tuple[int, bytes | None, bytes | None]]:
    records = MemoryRecords(data)
    out = []
    while (batch := records.next_batch()) is not None:
        out += [(r.offset, r.key, r.value) for r in batch]
    return out


def ours(data: bytes) -> list[tuple[int, bytes | None, bytes | None]]:
    records = MemoryRecords(data)
    out = []
    while (batch := records.next_batch()) is not None:
        run = decoder._batch_run(batch, check_crcs=True)
        out += list(zip(run.offsets, run.keys, run.values, strict=True))
    return out


def sample(n: int) -> list[tuple[int, bytes | None, bytes | None, list]]:
    """Keys and values of 0 to 20,000 bytes (varints of 1 to 3 bytes), nulls, timestamps far apart."""
    out: list[tuple[int, bytes | None, bytes | None, list]] = []
    for i in range(n):
        key = None if i % 11 == 0 and i % 13 else str(i).encode() * (1 + i % 5)
        value = None if i % 13 == 0 else b"v" * ((i * 997) % 20_000) if i % 7 == 0 else b'{"x":%d}' % i
        out.append((1_700_000_000_000 + i * 123_456_789, key, value, []))
    return out


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_built_batches_decode_as_kafka_python_decodes_them(codec: str) -> None:
    data = b"".join(built_batch(sample(300)[i : i + 100], CODECS[codec]) for i in range(0, 300, 100))
    assert ours(data) == theirs(data) and len(theirs(data)) == 300


def test_a_batch_with_headers_goes_through_kafka_pythons_own_iterator() -> None:
    records = sample(50)
    records[20] = (records[20][0], b"k", b"v", [("trace", b"id"), ("empty", None)])
    data = built_batch(records, CODECS["lz4"])
    assert ours(data) == theirs(data)


def test_the_truncated_batch_that_ends_a_fetch_is_left_out() -> None:
    whole = built_batch(sample(40)[:20]) + built_batch(sample(40)[20:])
    cut = whole[:-5]  # a fetch ends inside the second batch
    assert ours(cut) == theirs(cut) == theirs(whole)[:20]


def test_corrupt_records_raise_as_kafka_python_does() -> None:
    data = bytearray(built_batch(sample(10)))
    header = DefaultRecordBatch.HEADER_STRUCT.size
    data[header] ^= 0x02  # the first record's length: its size no longer adds up
    with pytest.raises(CorruptRecordError):
        ours(bytes(data))
    batch = DefaultRecordBatch(bytes(data))
    assert not batch.validate_crc()  # what check_crcs catches first on the consumer's path


def test_run_split_and_join_keep_order() -> None:
    run = decoder.Run(list(range(5)), [b"k"] * 5, [b"%d" % i for i in range(5)])
    head, tail = run.split(2)
    assert (head.offsets, tail.offsets) == ([0, 1], [2, 3, 4])
    assert decoder.Run.joined([head, tail]) == run


def test_another_kafka_python_version_is_not_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = KafkaConsumer(bootstrap_servers="127.0.0.1:9", api_version=(2, 8))
    try:
        assert decoder.supported(consumer)
        monkeypatch.setattr(kafka, "__version__", "3.0.13")
        assert not decoder.supported(consumer) and not decoder.install(consumer)
        assert consumer._fetcher.PartitionRecords is not decoder.RecordRuns
    finally:
        consumer.close()


def fetch_all(bootstrap: str, topic: str, starts: dict[int, int], bulk: bool, **config: Any) -> tuple:
    """Every record from `starts` to the end of each partition: ({partition: [(offset, key, value)]},
    the positions after them, the largest poll) through one poll loop."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **config)
    tps = [TopicPartition(topic, p) for p in sorted(starts)]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, starts[tp.partition])
    if bulk:
        assert decoder.install(consumer)
    ends = consumer.end_offsets(tps)
    got: dict[int, list] = {tp.partition: [] for tp in tps}
    largest = 0
    try:
        for _ in range(400):
            if all(consumer.position(tp) >= ends[tp] for tp in tps):
                break
            polled = consumer.poll(timeout_ms=500, max_records=333)
            n = 0
            for tp, items in polled.items():
                run = decoder.Run.joined(items) if bulk else decoder.Run.of(items)
                got[tp.partition] += list(zip(run.offsets, run.keys, run.values, strict=True))
                n += len(run)
            largest = max(largest, n)
        positions = {tp.partition: consumer.position(tp) for tp in tps}
    finally:
        consumer.close()
    return got, positions, largest


def produce(bootstrap: str, topic: str, compression: str | None, partitions: int, n: int) -> None:
    ensure_topic(bootstrap, topic, partitions)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, compression_type=compression, linger_ms=20, batch_size=16 * 1024
    )
    try:
        for i, (_, key, value, _) in enumerate(sample(n)):
            headers = [("h", b"%d" % i)] if i % 97 == 5 else []
            producer.send(topic, key=key, value=value, partition=i % partitions, headers=headers)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)


@pytest.mark.parametrize("compression", [None, "lz4", "gzip"])
def test_records_fetched_from_the_broker_match_kafka_pythons(
    kafka_broker: str, compression: str | None
) -> None:
    topic = f"test-decoder-{uuid.uuid4().hex[:10]}"
    produce(kafka_broker, topic, compression, partitions=3, n=3000)
    starts = {0: 0, 1: 17, 2: 333}  # mid-batch starts: the fetch returns whole batches from before them
    bulk = fetch_all(kafka_broker, topic, starts, bulk=True, max_partition_fetch_bytes=64 * 1024)
    plain = fetch_all(kafka_broker, topic, starts, bulk=False, max_partition_fetch_bytes=64 * 1024)
    assert bulk[0] == plain[0]  # (offset, key, value) per partition
    assert bulk[1] == plain[1]  # the positions the consumer would commit
    assert [recs[0][0] for recs in bulk[0].values()] == [0, 17, 333]
    assert sum(map(len, bulk[0].values())) == 3000 - 17 - 333
    assert bulk[2] <= 333  # max_records counts records, not runs


def test_aborted_transactions_and_control_batches_are_skipped_alike(kafka_broker: str) -> None:
    topic = f"test-decoder-tx-{uuid.uuid4().hex[:10]}"
    ensure_topic(kafka_broker, topic, 1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker, transactional_id=topic, compression_type="lz4")
    try:
        producer.init_transactions()
        for commit in (True, False, True):
            producer.begin_transaction()
            for i in range(50):
                producer.send(topic, key=b"%d" % i, value=b"committed" if commit else b"aborted", partition=0)
            producer.flush(timeout=30)  # on the broker before the abort: kafka-python drops unsent records
            producer.commit_transaction() if commit else producer.abort_transaction()
    finally:
        producer.close(timeout=10)
    for isolation in ("read_committed", "read_uncommitted"):
        bulk = fetch_all(kafka_broker, topic, {0: 0}, bulk=True, isolation_level=isolation)
        plain = fetch_all(kafka_broker, topic, {0: 0}, bulk=False, isolation_level=isolation)
        assert bulk[:2] == plain[:2]
        values = {v for _, _, v in bulk[0][0]}
        assert values == ({b"committed"} if isolation == "read_committed" else {b"committed", b"aborted"})


def test_the_consumers_batch_files_are_the_same_either_way(
    settings: PipelineSettings, tmp_path: Path
) -> None:
    """One partition, so that which rows a batch holds does not hang on the timing of fetches."""
    send(settings.bootstrap, settings.topic, make_rows(2000), extra=[b"not json", None])
    send(settings.bootstrap, settings.topic, make_rows(3000, start=2000))
    entries = {}
    for bulk in (True, False):
        out = tmp_path / f"bulk-{bulk}"
        member = BatchingConsumer(
            settings, BatchStore(out), BatchPolicy(batch_rows=1200), f"g-{uuid.uuid4().hex[:8]}", bulk=bulk
        )
        summary = member.run(max_batches=4, idle_timeout_s=8.0, progress=False)
        assert (summary.rows, summary.rejected) == (4800, 2)
        entries[bulk] = [
            (e.batch, e.rows, e.offsets, e.sha256, e.min_ts, e.max_ts) for e in read_manifest(out)
        ]
        entries[bulk, "rejects"] = BatchStore(out).rejected_messages()
    assert entries[True] == entries[False] and len(entries[True]) == 4
    assert entries[True, "rejects"] == entries[False, "rejects"]
