"""The bulk record writer: its encoding matches kafka-python's own, and a failed batch (or half of a split
one) is never missed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import kafka
import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.producer.future import FutureRecordMetadata
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.util import encode_varint

import pipeline.records as records_module
from pipeline.delivery import close
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
        yield BulkAppender(producer, "t", 0, wait_s=5.0)
    finally:
        close(producer, abandon=True)  # kafka-python's own close(0) raises while batches are pending


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


def batches_of(appender: BulkAppender) -> list:
    """Drain the partition's batches as the sender does (closed, so their bytes are built)."""
    queue = appender._acc._batches[appender.tp]
    drained = list(queue)
    queue.clear()
    for batch in drained:
        batch.records.close()
    return drained


def test_every_record_has_its_place_in_the_batch_futures(appender: BulkAppender) -> None:
    """kafka-python's split rebinds `_record_futures[i]` to the half record i lands in: one entry each."""
    appender.append(records(3_000))
    appender.append(records(10))  # lands in the open batch through kafka-python's own append
    for batch in appender._acc._batches[appender.tp]:
        assert len(batch._record_futures) == batch.records.next_offset()


def split(appender: BulkAppender, batch: object) -> list:
    """What the sender does with a batch the broker answered MESSAGE_TOO_LARGE: split, re-enqueue."""
    acc = appender._acc
    acc.split_and_reenqueue(batch)
    acc.deallocate(batch)
    return batches_of(appender)


def fail(appender: BulkAppender, batch: object, error: Exception) -> None:
    batch.complete_exceptionally(error, lambda _: error)
    appender._acc.deallocate(batch)


def succeed(appender: BulkAppender, batch: object) -> None:
    batch.complete(base_offset=0, log_append_time=-1)
    appender._acc.deallocate(batch)


@pytest.mark.parametrize("failing", [0, 1], ids=["first-half", "second-half"])
def test_a_failed_half_of_a_split_batch_is_reported(appender: BulkAppender, failing: int) -> None:
    appender.append(records(400))  # one 16 KB batch
    (batch,) = batches_of(appender)
    halves = split(appender, batch)
    assert len(halves) == 2
    assert halves[1]._record_futures and all(f is appender._halves for f in halves[1]._record_futures)
    succeed(appender, halves[1 - failing])
    fail(appender, halves[failing], MessageSizeTooLargeError("still too large"))
    # reported (once per watcher of that half: the record future and/or the half itself)
    assert appender.errors() and {type(e) for e in appender.errors()} == {MessageSizeTooLargeError}


def test_a_quarter_of_a_batch_split_twice_is_still_watched(appender: BulkAppender) -> None:
    appender.append(records(400))  # one 16 KB batch
    (batch,) = batches_of(appender)
    first, second = split(appender, batch)
    quarters = split(appender, second)
    assert len(quarters) == 2
    for piece in (first, quarters[0]):
        succeed(appender, piece)
    assert appender.errors() == []
    fail(appender, quarters[1], KafkaTimeoutError("expired"))
    assert {str(e) for e in appender.errors()} == {"KafkaTimeoutError: expired"}


def test_split_halves_that_succeed_report_nothing(appender: BulkAppender) -> None:
    appender.append(records(400))  # one 16 KB batch
    (batch,) = batches_of(appender)
    for half in split(appender, batch):
        succeed(appender, half)
    assert appender.errors() == []


def test_the_next_append_raises_a_reported_failure_at_once(appender: BulkAppender) -> None:
    """A failure stops the run within a batch of it, not at the end of the file."""
    appender.append(records(100))
    (batch,) = batches_of(appender)
    fail(appender, batch, KafkaTimeoutError("expired"))
    with pytest.raises(KafkaTimeoutError, match="expired"):
        appender.append(records(1))


def test_supported_only_on_the_pinned_version_with_every_private_name(
    appender: BulkAppender, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = appender.producer
    assert BulkAppender.supported(producer)
    with monkeypatch.context() as patch:
        patch.setattr(kafka, "__version__", "3.0.13")
        assert not BulkAppender.supported(producer)
    with monkeypatch.context() as patch:
        patch.setattr(producer, "_accumulator", object())  # an accumulator without _batches, _tp_lock
        assert not BulkAppender.supported(producer)
    with monkeypatch.context() as patch:
        patch.setattr(FutureRecordMetadata, "__slots__", ("args",))
        assert not BulkAppender.supported(producer)


def test_every_private_name_the_bulk_path_uses_is_checked() -> None:
    """Each `._name` in pipeline/records.py is one `supported()` checks (or this module's own)."""
    source = Path(records_module.__file__).read_text()
    used = set(re.findall(r"\._([a-z][a-z_]*)\b", source))
    checked = {name.lstrip("_") for names in records_module._PRIVATE.values() for name in names}
    own = {"acc", "errors", "halves", "watch", "last", "watch_half", "raise_failure", "fill", "wait_for_room"}
    assert used - own <= checked, used - own - checked
