"""Kafka records written in bulk into kafka-python's open record batches.

Why: `KafkaProducer.send` costs about 25 µs of Python per record (type checks, size estimate, a
future per record, six varint calls, locks), which caps a process near 15-25k rows/s. Everything
around the record is still kafka-python's: the accumulator's batches, the sender thread, the
idempotent producer id and sequence numbers, retries, splits, compression, acks. Only the record bytes
inside an open batch are written here, many at a time under the partition's lock, the way
`DefaultRecordBatchBuilder.append` writes them (attributes 0, timestamp delta 0, offset delta, key,
value, no headers). One record's future per batch replaces one future per record.

This reaches into kafka-python internals of exactly the version pinned in requirements.lock
(`KAFKA_PYTHON`); `BulkAppender.supported` checks the version and every private name used here, and
the producer falls back to `send` when anything differs.
"""

from __future__ import annotations

import functools
import time
from itertools import repeat
from typing import Any

import kafka
import kafka.record.default_records as default_records
from kafka import KafkaProducer
from kafka.codec import gzip_encode, has_lz4
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.producer.future import FutureRecordMetadata
from kafka.producer.producer_batch import ProducerBatch
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.structs import TopicPartition

KAFKA_PYTHON = "3.0.12"  # the only version whose internals this module was written against
MAX_QUEUED_BATCHES = 32  # per partition, ~8 MB at 256 KB batches: kafka-python 3 has no buffer_memory

# Every private name the bulk path touches, by owner (grep this module for `._` when changing it).
_PRIVATE = {
    "producer": ("_accumulator", "_sender"),
    "accumulator": ("_batches", "_tp_lock"),
    "batch": ("_record_futures",),
    "MemoryRecordsBuilder": ("_builder", "_closed", "_next_offset"),
    "DefaultRecordBatchBuilder": ("_buffer", "_num_records", "_last_offset", "_batch_size"),
    "FutureRecordMetadata": ("_produce_future",),
}


def compression() -> str:
    """lz4 when its package is installed (cheapest by far), else gzip at level 1.

    kafka-python gzips at level 9, about 15 µs of CPU per row here; level 1 costs about 1.3 µs and
    still shrinks our rows about five-fold, which also shrinks what kafka-python's pure-Python CRC32C
    (used unless the `crc32c` package is installed) has to walk.
    """
    if has_lz4():
        return "lz4"
    if not isinstance(default_records.gzip_encode, functools.partial):
        default_records.gzip_encode = functools.partial(gzip_encode, compresslevel=1)
    return "gzip"


def _varint(value: int) -> bytes:
    """Kafka's zigzag varint (what kafka.record.util.encode_varint writes)."""
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_VARINT = [_varint(i) for i in range(1 << 14)]


def varint(value: int) -> bytes:
    return _VARINT[value] if value < 16384 else _varint(value)


class _Halves:
    """Stands, in a batch's `_record_futures`, for each record `_fill` wrote without a future.

    When the broker answers MESSAGE_TOO_LARGE, kafka-python splits the batch in two and rebinds
    `_record_futures[i]` to the half that record `i` lands in; the old batch never completes. A half
    made only of our records would have no future at all, and its failure would be lost. Holding this
    object at every such index keeps the list aligned with the records, and its `rebind` hands each
    new half to the appender to watch (a half split again is rebound again).
    """

    __slots__ = ("_watch", "_last")

    def __init__(self, watch: Any) -> None:
        self._watch = watch
        self._last: Any = None

    def rebind(self, produce_future: Any, batch_index: int) -> None:  # kafka-python's sender thread
        if produce_future is not self._last:  # one call per record: watch each half once
            self._last = produce_future
            self._watch(produce_future)


class BulkAppender:
    """Appends (key, value) records to one partition through the producer's accumulator.

    A failure kafka-python reports (after its own retries and splits, within the delivery timeout)
    lands in `errors()` from the sender thread; the next `append` raises it, so a run stops within a
    batch of it. `wait_s` bounds the wait for room in the partition's queue: longer than the
    producer's delivery timeout, by which kafka-python fails a batch it could not deliver.
    """

    def __init__(self, producer: KafkaProducer, topic: str, partition: int, wait_s: float) -> None:
        self.producer = producer
        self.tp = TopicPartition(topic, partition)
        self.wait_s = wait_s
        self._acc = producer._accumulator
        self._errors: list[BaseException] = []
        self._halves = _Halves(self._watch_half)

    @staticmethod
    def supported(producer: KafkaProducer) -> bool:
        """The exact kafka-python version and every private name used here, else `send` is used."""
        if kafka.__version__ != KAFKA_PYTHON:
            return False
        acc = getattr(producer, "_accumulator", None)
        sample = ProducerBatch(TopicPartition("t", 0), MemoryRecordsBuilder(2, 0, 1024))
        owners: dict[str, Any] = {"producer": producer, "accumulator": acc, "batch": sample}
        slotted = {
            "MemoryRecordsBuilder": MemoryRecordsBuilder,
            "DefaultRecordBatchBuilder": DefaultRecordBatchBuilder,
            "FutureRecordMetadata": FutureRecordMetadata,
        }
        for owner, names in _PRIVATE.items():
            if owner in slotted:
                if not set(names) <= set(getattr(slotted[owner], "__slots__", ())):
                    return False
            elif not all(hasattr(owners[owner], name) for name in names):
                return False
        public = ("records", "produce_future", "max_record_size", "last_append")
        return (
            all(hasattr(sample, name) for name in public)
            and callable(getattr(acc, "append", None))
            and callable(getattr(producer._sender, "wakeup", None))
            and isinstance(sample._record_futures, list)
        )

    def append(self, records: list[tuple[bytes, bytes]]) -> None:
        """Append every record, in order; kafka-python opens each new batch (one record through `append`).

        Raises the first failure kafka-python reported for an earlier batch.
        """
        acc, tp, i, n = self._acc, self.tp, 0, len(records)
        self._wait_for_room()
        while i < n:
            self._raise_failure()
            key, value = records[i]
            future, full, new, _ = acc.append(tp, int(time.time() * 1000), key, value, [])
            future.add_errback(self._errors.append)  # before the sender can drain its batch
            i += 1
            with acc._tp_lock(tp):
                queue = acc._batches[tp]
                batch = queue[-1] if queue else None
                # fill only the batch `future` is in, while still open (the sender may have drained it)
                if (
                    batch is not None
                    and batch.produce_future is future._produce_future
                    and not batch.records._closed
                ):
                    before = i
                    i = self._fill(batch, records, i)
                    full = full or i < n or i > before and batch.records.is_full()
            if full or new:
                self.producer._sender.wakeup()

    def _fill(self, batch: Any, records: list[tuple[bytes, bytes]], i: int) -> int:
        """Write records[i:] into the open batch until it is full; return the index of the first left out."""
        builder = batch.records._builder
        buffer: bytearray = builder._buffer
        room = builder._batch_size - len(buffer)
        offset = batch.records._next_offset
        pieces: list[bytes] = []
        largest = batch.max_record_size
        n = len(records)
        while i < n:
            key, value = records[i]
            body = b"".join(
                (b"\x00\x00", varint(offset), varint(len(key)), key, varint(len(value)), value, b"\x00")
            )
            record = varint(len(body)) + body
            size = len(record)
            if size > room:
                break
            room -= size
            pieces.append(record)
            largest = max(largest, size)
            offset += 1
            i += 1
        if pieces:
            buffer += b"".join(pieces)
            builder._num_records += len(pieces)
            builder._last_offset = offset - 1
            batch.records._next_offset = offset
            batch._record_futures.extend(repeat(self._halves, len(pieces)))  # one entry per record
            batch.max_record_size = largest
            batch.last_append = time.monotonic()
        return i

    def _watch_half(self, produce_future: Any) -> None:
        """A half of a split batch: it failed when its result carries a record-exceptions function."""

        def done(result: tuple[int, int, Any]) -> None:
            if result[2] is not None:
                self._errors.append(result[2](0))

        produce_future.add_callback(done)
        produce_future.add_errback(self._errors.append)

    def _raise_failure(self) -> None:
        if self._errors:
            error = self._errors[0]
            raise error if isinstance(error, KafkaError) else KafkaError(repr(error))

    def _wait_for_room(self) -> None:
        """Backpressure: wait while the partition already queues many batches; bounded by `wait_s`."""
        queue = self._acc._batches[self.tp]
        deadline = time.monotonic() + self.wait_s
        while len(queue) > MAX_QUEUED_BATCHES:
            self._raise_failure()
            if time.monotonic() > deadline:
                raise KafkaTimeoutError(f"{len(queue)} batches for {self.tp} not sent in {self.wait_s:.0f} s")
            self.producer._sender.wakeup()
            time.sleep(0.002)
        self._raise_failure()

    def errors(self) -> list[BaseException]:
        """What kafka-python failed for good (after its retries); complete once the producer is flushed."""
        return list(self._errors)
