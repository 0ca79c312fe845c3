"""The bulk record writer: its encoding matches kafka-python's own, and a failed batch is never missed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.util import encode_varint

from pipeline.records import BulkAppender, varint


@pytest.mark.parametrize("value", [0, 1, 63, 64, 127, 128, 300, 16383, 16384, 10**6, 2**31])
def test_varint_matches_kafka_python(value: int) -> None:
    expected = bytearray()
    encode_varint(value, expected.append)
    assert varint(value) == bytes(expected)


def test_records_written_like_the_builder_decode_the_same() -> None:
    """Bytes we would append decode, through kafka-python's reader, to the keys and values given."""
    records = [(f"{1325412060 + 60 * i}.0".encode(), b'{"Open":4.58}' * (1 + i % 3)) for i in range(500)]
    ours = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    ours.append(0, 1000, records[0][0], records[0][1], [])
    pieces = []
    for offset, (key, value) in enumerate(records[1:], start=1):
        body = b"".join(
            (b"\x00\x00", varint(offset), varint(len(key)), key, varint(len(value)), value, b"\x00")
        )
        pieces.append(varint(len(body)) + body)
    ours._buffer += b"".join(pieces)
    ours._num_records += len(pieces)
    ours._last_offset = len(records) - 1
    decoded = [(r.key, r.value, r.offset) for r in DefaultRecordBatch(bytes(ours.build()))]
    assert decoded == [(k, v, i) for i, (k, v) in enumerate(records)]


@pytest.fixture
def appender() -> Iterator[BulkAppender]:
    """A real producer (and accumulator) whose broker never answers: nothing is sent, batches are
    drained and failed by the test in place of the sender thread."""
    producer = KafkaProducer(bootstrap_servers="127.0.0.1:9", api_version=(2, 8), linger_ms=60_000)
    try:
        yield BulkAppender(producer, "t", 0)
    finally:
        producer.close(timeout=0)


def records(n: int) -> list[tuple[bytes, bytes]]:
    return [(f"{1325412060 + 60 * i}.0".encode(), b'{"Open":4.58}') for i in range(n)]


def test_a_failed_batch_is_reported(appender: BulkAppender) -> None:
    appender.append(records(100))
    acc = appender._acc
    (batch,) = acc._batches[appender.tp]
    acc._batches[appender.tp].clear()  # what the sender does: drain, close, fail, deallocate
    batch.records.close()
    batch.complete_exceptionally(KafkaTimeoutError("expired"), lambda _: KafkaTimeoutError("expired"))
    acc.deallocate(batch)
    assert [type(e) for e in appender.errors()] == [KafkaTimeoutError]


def test_a_batch_drained_before_we_look_is_still_watched(
    appender: BulkAppender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender may drain the batch `acc.append` just opened before the partition lock is taken."""
    acc, drained = appender._acc, []
    real_append = acc.append

    def append_then_drain(*args: object, **kwargs: object) -> object:
        result = real_append(*args, **kwargs)
        with acc._tp_lock(appender.tp):
            batch = acc._batches[appender.tp].popleft()
        batch.records.close()
        drained.append(batch)
        return result

    monkeypatch.setattr(acc, "append", append_then_drain)
    appender.append(records(3))  # each record opens its own batch, drained at once
    assert len(drained) == 3
    drained[1].abort(KafkaTimeoutError("gone"))
    for batch in (drained[0], drained[2]):
        batch.complete(base_offset=0, log_append_time=-1)
    for batch in drained:
        acc.deallocate(batch)
    assert [str(e) for e in appender.errors()] == ["KafkaTimeoutError: gone"]
