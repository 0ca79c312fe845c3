"""Kafka record batches decoded in bulk: a poll hands over runs of (offsets, keys, values), not records.

Why: kafka-python turns every fetched record into two Python objects (its DefaultRecord, then a
ConsumerRecord of 13 fields) through seven varint calls and a dozen property lookups, about 7 µs of
CPU a record: 77% of a consumer member's time, which capped it near 100k rows/s. The consumer needs
none of that: only each record's offset and value (its key when the value is rejected). Here one
record batch is decoded in one tight loop into three lists.

Everything else is still kafka-python's: the fetch requests and sessions, positions, rebalances,
pauses, the batch header, the CRC check (`check_crcs`, native with the pinned crc32c package), the
decompression, aborted transactions and control batches, the truncated batch that ends a fetch
(`MemoryRecords` leaves it out, as it does for the per-record path). `RecordRuns` replaces only
`Fetcher.PartitionRecords`'s record iteration: it follows `_unpack_records` step by step, setting
`next_fetch_offset` exactly as it does, so the positions the consumer commits are the same. A batch
the loop does not know (magic 0/1, a record with headers) is decoded by kafka-python's own record
iterator into the same kind of run.

This reaches into kafka-python internals of exactly the version pinned in requirements.lock
(`KAFKA_PYTHON`, as the producer's bulk path in `pipeline.records` does); `supported` checks the
version and every private name used here, and the consumer keeps kafka-python's own records when
anything differs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import kafka
import kafka.errors as errors
from kafka import KafkaConsumer
from kafka.consumer.fetcher import Fetcher, IsolationLevel
from kafka.record.default_records import DefaultRecordBatch

from pipeline.records import KAFKA_PYTHON

# Every private name touched here, by owner (grep this module for `._` when changing it).
_PRIVATE = {
    "Fetcher": ("_append", "_parse_fetched_data", "PartitionRecords"),
    "PartitionRecords": (
        "_consume_aborted_transactions_up_to",
        "_contains_abort_marker",
        "_is_batch_aborted",
        "_maybe_raise_next_inline_exception",
        "drain",
    ),
    "DefaultRecordBatch": ("_maybe_uncompress", "_buffer", "_pos", "_num_records"),
}
_PARTITION_RECORDS_STATE = (  # set by PartitionRecords.__init__, read by the fetcher or here
    "fetch_offset",
    "topic_partition",
    "leader_epoch",
    "next_fetch_offset",
    "bytes_read",
    "records_read",
    "isolation_level",
    "aborted_producer_ids",
    "aborted_transactions",
    "check_crcs",
    "record_iterator",
    "_next_inline_exception",
)


@dataclass
class Run:
    """Consecutive records of one partition, in offset order, as three parallel lists."""

    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]

    def __len__(self) -> int:
        return len(self.offsets)

    def split(self, n: int) -> tuple[Run, Run]:
        return (
            Run(self.offsets[:n], self.keys[:n], self.values[:n]),
            Run(self.offsets[n:], self.keys[n:], self.values[n:]),
        )

    @classmethod
    def joined(cls, runs: list[Run]) -> Run:
        if len(runs) == 1:
            return runs[0]
        offsets: list[int] = []
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        for run in runs:
            offsets += run.offsets
            keys += run.keys
            values += run.values
        return cls(offsets, keys, values)

    @classmethod
    def of(cls, records: list[Any]) -> Run:
        """kafka-python's ConsumerRecords (the path without bulk decoding) as a run."""
        return cls([r.offset for r in records], [r.key for r in records], [r.value for r in records])


class _Unusual(Exception):
    """A record the tight loop does not decode (headers): the batch goes through kafka-python's own."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """An unsigned varint at `pos` (the loop reads those of one or two bytes inline)."""
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def decode_records(buf: bytes, pos: int, count: int, base_offset: int) -> Run:
    """The `count` records of an uncompressed batch body starting at `pos`, as kafka-python's
    `DefaultRecordBatch._read_msg` reads them (attributes and timestamp delta skipped; varints zigzag).

    Raises errors.CorruptRecordError on a record whose size does not add up or trailing bytes,
    _Unusual on a record with headers.
    """
    offsets: list[int] = []
    keys: list[bytes | None] = []
    values: list[bytes | None] = []
    add_offset, add_key, add_value = offsets.append, keys.append, values.append
    try:
        for _ in range(count):
            n = buf[pos]
            if n < 0x80:
                pos += 1
            elif buf[pos + 1] < 0x80:
                n = (n & 0x7F) | (buf[pos + 1] << 7)
                pos += 2
            else:
                n, pos = _varint(buf, pos)
            length = (n >> 1) ^ -(n & 1)
            start = pos
            if buf[pos] < 0x80 and buf[pos + 1] < 0x80:  # attributes, timestamp delta: one byte each
                pos += 2
            else:
                pos = _varint(buf, pos)[1] if buf[pos] >= 0x80 else pos + 1
                pos = _varint(buf, pos)[1] if buf[pos] >= 0x80 else pos + 1
            n = buf[pos]
            if n < 0x80:
                pos += 1
            elif buf[pos + 1] < 0x80:
                n = (n & 0x7F) | (buf[pos + 1] << 7)
                pos += 2
            else:
                n, pos = _varint(buf, pos)
            add_offset(base_offset + ((n >> 1) ^ -(n & 1)))
            n = buf[pos]
            if n < 0x80:
                pos += 1
            elif buf[pos + 1] < 0x80:
                n = (n & 0x7F) | (buf[pos + 1] << 7)
                pos += 2
            else:
                n, pos = _varint(buf, pos)
            n = (n >> 1) ^ -(n & 1)
            if n >= 0:
                add_key(buf[pos : pos + n])
                pos += n
            else:
                add_key(None)
            n = buf[pos]
            if n < 0x80:
                pos += 1
            elif buf[pos + 1] < 0x80:
                n = (n & 0x7F) | (buf[pos + 1] << 7)
                pos += 2
            else:
                n, pos = _varint(buf, pos)
            n = (n >> 1) ^ -(n & 1)
            if n >= 0:
                add_value(buf[pos : pos + n])
                pos += n
            else:
                add_value(None)
            if buf[pos] != 0:  # header count
                raise _Unusual
            pos += 1
            if pos - start != length:
                raise errors.CorruptRecordError(
                    f"Invalid record size: expected to read {length} bytes in record payload, "
                    f"but instead read {pos - start}"
                )
    except (ValueError, IndexError) as exc:
        raise errors.CorruptRecordError(f"Found invalid record structure: {exc!r}") from exc
    if pos != len(buf):
        raise errors.CorruptRecordError(f"{len(buf) - pos} unconsumed bytes after all records consumed")
    return Run(offsets, keys, values)


def _batch_run(batch: Any, check_crcs: bool) -> Run:
    """One batch's records, by the tight loop or, for what it does not know, by kafka-python."""
    if batch.magic == 2:
        raw = batch._buffer  # the batch as fetched (decompression binds a new buffer)
        batch._maybe_uncompress()
        try:
            return decode_records(bytes(batch._buffer), batch._pos, batch._num_records, batch.base_offset)
        except _Unusual:
            batch = DefaultRecordBatch(raw)
    offsets, keys, values = [], [], []
    for record in batch:
        if check_crcs and not record.validate_crc():  # magic 0/1: a CRC per record
            raise errors.CorruptRecordError(f"Record at offset {record.offset} failed crc check")
        offsets.append(record.offset)
        keys.append(record.key)
        values.append(record.value)
    return Run(offsets, keys, values)


class RecordRuns(Fetcher.PartitionRecords):  # type: ignore[misc]
    """One fetched partition's data, handed over as runs; `take(n)` returns runs holding n records at
    most and leaves their count in `taken` (kafka-python's fetcher counts records by `len()` of what
    `take` returns: `install` makes it read `taken` instead)."""

    def __init__(self, fetch_offset: int, tp: Any, records: Any, **configs: Any) -> None:
        super().__init__(fetch_offset, tp, records, **configs)
        self.record_iterator = self._runs(records)
        self._held: Run | None = None  # what the last take left of a run
        self.taken = 0

    def _runs(self, records: Any) -> Iterator[Run]:
        """`_unpack_records` (kafka-python 3.0.12), one run per batch instead of one record at a time."""
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise errors.CorruptRecordError(
                    f"Record batch for partition {self.topic_partition} at offset {batch.base_offset} "
                    "failed crc check"
                )
            if batch.magic == 2:
                self.leader_epoch = batch.leader_epoch
                if self.isolation_level == IsolationLevel.READ_COMMITTED and batch.has_producer_id():
                    self._consume_aborted_transactions_up_to(batch.last_offset)
                    if self._contains_abort_marker(batch):
                        self.aborted_producer_ids.discard(batch.producer_id)
                    elif self._is_batch_aborted(batch):
                        self.next_fetch_offset = batch.next_offset
                        batch = records.next_batch()
                        continue
                if batch.is_control_batch:
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
            run = _batch_run(batch, self.check_crcs)
            skip = 0  # a fetch from the middle of a batch returns all of it: start at fetch_offset
            while skip < len(run) and run.offsets[skip] < self.fetch_offset:
                skip += 1
            if skip:
                self.next_fetch_offset = run.offsets[skip - 1] + 1
                run = run.split(skip)[1]
            if len(run):
                self.records_read += len(run)
                self.bytes_read += batch.size_in_bytes
                yield run
            batch = records.next_batch()
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = last_batch.next_offset
        self.drain()

    def take(self, n: int | None = None) -> list[Run]:
        self._maybe_raise_next_inline_exception()
        self.taken = 0
        runs: list[Run] = []
        want = n if n is not None else float("inf")
        try:
            while self.taken < want and self.record_iterator is not None:
                run = self._held or next(self.record_iterator, None)
                self._held = None
                if run is None:
                    break
                if len(run) > want - self.taken:
                    run, self._held = run.split(int(want - self.taken))
                runs.append(run)
                self.taken += len(run)
                self.next_fetch_offset = run.offsets[-1] + 1
        except Exception as exc:
            if not runs:
                raise
            self._next_inline_exception = exc  # raised by the next take, as kafka-python does
        return runs

    def drain(self) -> None:
        self._held = None
        super().drain()


def supported(consumer: KafkaConsumer) -> bool:
    """The exact kafka-python version, every private name used here, and no deserializers (the runs
    hold raw bytes); else the consumer keeps kafka-python's records."""
    if kafka.__version__ != KAFKA_PYTHON:
        return False
    fetcher = getattr(consumer, "_fetcher", None)
    if not isinstance(fetcher, Fetcher) or hasattr(fetcher, "__slots__"):
        return False
    owners: dict[str, Any] = {
        "Fetcher": fetcher,
        "PartitionRecords": Fetcher.PartitionRecords,
        "DefaultRecordBatch": DefaultRecordBatch,
    }
    for owner, names in _PRIVATE.items():
        if owner == "DefaultRecordBatch":
            if not set(names) - {"_maybe_uncompress"} <= set(DefaultRecordBatch.__slots__):
                return False
            names = ("_maybe_uncompress",)
        if not all(hasattr(owners[owner], name) for name in names):
            return False
    config = getattr(fetcher, "config", {})
    if config.get("key_deserializer") is not None or config.get("value_deserializer") is not None:
        return False
    probe = Fetcher.PartitionRecords(0, None, _NoRecords())
    return all(hasattr(probe, name) for name in _PARTITION_RECORDS_STATE)


class _NoRecords:
    def next_batch(self) -> None:
        return None


def install(consumer: KafkaConsumer) -> bool:
    """Make `consumer.poll` return {partition: [Run, ...]} (at most `max_records` records in all).

    False, and nothing changed, when `supported` says no: poll then returns kafka-python's records.
    """
    if not supported(consumer):
        return False
    fetcher = consumer._fetcher
    append = fetcher._append  # bound: kafka-python's own

    def counted_append(drained: Any, part: Any, max_records: int, update_offsets: bool) -> int:
        """kafka-python's `_append`, returning the records taken rather than the runs."""
        if not isinstance(part, RecordRuns):
            return int(append(drained, part, max_records, update_offsets))
        part.taken = 0
        append(drained, part, max_records, update_offsets)
        return part.taken

    fetcher.PartitionRecords = RecordRuns
    fetcher._append = counted_append  # an instance attribute: called unbound, as self._append(...)
    return True
