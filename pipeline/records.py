"""Kafka records written in bulk into kafka-python's open record batches.

Why: `KafkaProducer.send` costs about 25 µs of Python per record (type checks, size estimate, a
future per record, six varint calls, locks), which caps a process near 15-25k rows/s. Everything
around the record is still kafka-python's: the accumulator's batches, the sender thread, the
idempotent producer id and sequence numbers, retries, compression, acks. Only the record bytes inside
an open batch are written here, many at a time under the partition's lock, the way
`DefaultRecordBatchBuilder.append` writes them (attributes 0, timestamp delta 0, offset delta, key,
value, no headers). One record's future per batch replaces one future per record.

This reaches into kafka-python internals pinned in requirements.lock (3.0.12); `BulkAppender.supported`
checks they are there, and the producer falls back to `send` when they are not.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import kafka.record.default_records as default_records
from kafka import KafkaProducer
from kafka.codec import gzip_encode, has_lz4
from kafka.errors import KafkaTimeoutError
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.structs import TopicPartition

MAX_QUEUED_BATCHES = 32  # per partition, ~8 MB at 256 KB batches: kafka-python 3 has no buffer_memory
QUEUE_WAIT_S = 30.0  # a queue that does not drain for this long means the broker is gone


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


class BulkAppender:
    """Appends (key, value) records to one partition through the producer's accumulator."""

    def __init__(self, producer: KafkaProducer, topic: str, partition: int) -> None:
        self.producer = producer
        self.tp = TopicPartition(topic, partition)
        self._acc = producer._accumulator
        self.futures: list[Any] = []

    @staticmethod
    def supported(producer: KafkaProducer) -> bool:
        acc = getattr(producer, "_accumulator", None)
        return (
            acc is not None
            and hasattr(acc, "_batches")
            and hasattr(acc, "_tp_lock")
            and hasattr(producer, "_sender")
            and {"_buffer", "_num_records", "_last_offset", "_batch_size"}
            <= set(getattr(DefaultRecordBatchBuilder, "__slots__", ()))
        )

    def append(self, records: list[tuple[bytes, bytes]]) -> None:
        """Append every record, in order; kafka-python opens each new batch (one record through `append`)."""
        acc, tp, i, n = self._acc, self.tp, 0, len(records)
        self._wait_for_room()
        while i < n:
            key, value = records[i]
            future, full, new, _ = acc.append(tp, int(time.time() * 1000), key, value, [])
            self._watch(future)  # kept before the sender can drain the batch it landed in
            i += 1
            with acc._tp_lock(tp):
                queue = acc._batches[tp]
                batch = queue[-1] if queue else None  # the batch `future` is in, unless already drained
                if batch is not None and not batch.records._closed:
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
            batch.max_record_size = largest
            batch.last_append = time.monotonic()
        return i

    def _watch(self, future: Any) -> None:
        """Keep the future of the record `acc.append` wrote. It fails when its batch fails; the batch's
        own produce_future does not (kafka-python 3 completes it successfully and hands the error to
        the record futures). Every batch we fill got its first record through `acc.append`, so one
        such future per batch covers the records `_fill` writes after it."""
        if future is None:
            return
        self.futures.append(future)
        if len(self.futures) > 4 * MAX_QUEUED_BATCHES:  # keep only the ones that can still fail
            self.futures = [f for f in self.futures if not f.is_done or f.failed()]

    def _wait_for_room(self) -> None:
        """Backpressure: wait while the partition already queues many batches; bounded."""
        queue = self._acc._batches[self.tp]
        deadline = time.monotonic() + QUEUE_WAIT_S
        while len(queue) > MAX_QUEUED_BATCHES:
            if time.monotonic() > deadline:
                raise KafkaTimeoutError(f"{len(queue)} batches for {self.tp} not sent in {QUEUE_WAIT_S:.0f}s")
            self.producer._sender.wakeup()
            time.sleep(0.002)

    def errors(self) -> list[BaseException]:
        """What the broker refused for good (after kafka-python's retries); call after flush."""
        return [f.exception for f in self.futures if f.is_done and f.failed()]
