"""The batching consumer: Kafka messages → batch files, exactly once across crashes.

The manifest, not the group's committed offsets, says where to resume: a batch is written aside and
renamed, the manifest is updated, and only then are offsets committed (for tools like
kafka-consumer-groups; nothing here trusts them over the manifest). After SIGKILL at any moment the
next run seeks every partition to just after the last offset the manifest records, so the rows of an
unfinished batch are read again and no row lands in two files. One consumer process per output
directory: the store has one writer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import FencedInstanceIdError, KafkaError
from kafka.structs import OffsetAndMetadata

from pipeline.batching import BatchPolicy, OpenBatch
from pipeline.broker import admin_client, ensure_topic
from pipeline.errors import BrokerUnavailable
from pipeline.settings import PipelineSettings
from pipeline.store import COLUMNS, BatchStore, Format

log = logging.getLogger("pipeline")

REJECTED = "rejected.jsonl"
POLL_RECORDS = 50_000  # rows handed over per poll: large enough to amortise, small enough to stay responsive
PROBE_S = (
    30.0  # after this long without a message, check the broker still answers (kafka-python retries silently)
)
POLL_MS = 500  # longest wait inside one poll: bounds how late a stop, a window or an idle timeout is seen
_FIELDS = itemgetter(*COLUMNS)
_NUMBER = (float, int)


@dataclass(frozen=True)
class ConsumeSummary:
    rows: int
    batches: int
    rejected: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"consumed {self.rows:,} rows into {self.batches} batches, {self.rejected} rejected, "
            f"in {self.seconds:.1f} s ({self.rows_per_s:,.0f} rows/s)"
        )


@dataclass(frozen=True)
class Rejected:
    """A message that is not a row: kept with where it came from and why."""

    partition: int
    offset: int
    key: str | None
    value: str | None
    reason: str


def _reason(value: bytes | None) -> str | None:
    """Why `value` is not a row (None: it is one). The slow path, only for polls that hold a bad message."""
    if value is None:
        return "empty value (tombstone)"
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if not isinstance(obj, dict):
        return f"not a JSON object but {type(obj).__name__}"
    for name in COLUMNS:
        if name not in obj:
            return f"missing field {name}"
        field = obj[name]
        if type(field) not in _NUMBER:
            return f"field {name} is not a number: {field!r}"[:200]
        if not np.isfinite(float(field)):
            return f"field {name} is not finite"
    return None


def parse_values(values: list[bytes | None]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Message values → (rows as an (n, 6) float64 array, [(index, reason)] of those that are not rows).

    The fast path decodes a whole poll with orjson and one numpy conversion; only a poll holding a bad
    message pays for checking message by message.
    """
    try:
        flat = list(chain.from_iterable(map(_FIELDS, map(orjson.loads, values))))  # type: ignore[arg-type]
        if set(map(type, flat)) <= {float, int}:
            rows = np.array(flat, dtype=np.float64).reshape(-1, len(COLUMNS))
            if np.isfinite(rows).all():
                return rows, []
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
        pass
    good: list[tuple[float, ...]] = []
    bad: list[tuple[int, str]] = []
    for i, value in enumerate(values):
        reason = _reason(value)
        if reason is None:
            good.append(_FIELDS(orjson.loads(value)))  # type: ignore[arg-type]
        else:
            bad.append((i, reason))
    return np.array(good, dtype=np.float64).reshape(-1, len(COLUMNS)), bad


def _text(raw: bytes | None, limit: int = 1000) -> str | None:
    return None if raw is None else raw[:limit].decode("utf-8", errors="replace")


class RejectLog:
    """`DIR/rejected.jsonl`: one line per message that was not a row, tagged with the batch whose offset
    range holds it. Lines of a batch the manifest does not list (a crash came first) are dropped at
    start, because those messages will be read, and rejected, again."""

    def __init__(self, directory: Path, batches: int) -> None:
        self.path = directory / REJECTED
        self._trim(batches)

    def _trim(self, batches: int) -> None:
        if not self.path.exists():
            return
        lines = self.path.read_bytes().splitlines(keepends=True)
        keep = []
        for line in lines:
            try:
                if json.loads(line)["batch"] <= batches:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash
        if len(keep) != len(lines):
            tmp = self.path.with_name(REJECTED + ".tmp")
            tmp.write_bytes(b"".join(keep))
            tmp.replace(self.path)

    def append(self, batch: int, rejected: list[Rejected]) -> None:
        if not rejected:
            return
        with self.path.open("ab") as f:
            for r in rejected:
                f.write(orjson.dumps({"batch": batch, **r.__dict__}) + b"\n")
            f.flush()
            os.fsync(f.fileno())


class _Rebalances(ConsumerRebalanceListener):
    """Seeks newly assigned partitions to where the manifest says, before the first fetch, and counts
    assignment changes so the loop can check the rest in its own thread (kafka-python runs listeners
    on its IO thread, where blocking calls like committed() must not happen)."""

    def __init__(self, resume: Callable[[], dict[int, int]]) -> None:
        self.resume = resume
        self.consumer: KafkaConsumer | None = None
        self.generation = 0

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.generation += 1

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.generation += 1
        resume = self.resume()
        for tp in assigned:
            if self.consumer is not None and tp.partition in resume:
                self.consumer.seek(tp, resume[tp.partition])


def _open_consumer(settings: PipelineSettings, group_id: str, listener: _Rebalances) -> KafkaConsumer:
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            group_id=group_id,
            # Static membership, one member per group: a consumer restarted after SIGKILL takes its
            # predecessor's place at once instead of waiting out its session (or a rebalance), and a
            # second process in the same group fences the first: the store has one writer.
            group_instance_id=f"{group_id}-batcher",
            session_timeout_ms=15_000,
            client_id="btcflow-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            check_crcs=True,  # native with the crc32c package (pinned); a corrupt batch must not land
            fetch_max_bytes=16 * 1024 * 1024,  # bigger buys nothing: decoding, not fetching, is the cost
            max_partition_fetch_bytes=8 * 1024 * 1024,
            max_poll_records=POLL_RECORDS,
            max_poll_interval_ms=120_000,  # writing a 2.33M-row batch takes seconds, not minutes
            metrics_enabled=False,
            bootstrap_timeout_ms=5000,
            request_timeout_ms=30_000,
        )
        consumer.subscribe([settings.topic], listener=listener)
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"Kafka not reachable at {settings.bootstrap} ({type(exc).__name__})"
        ) from exc
    return consumer


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop` (only the main thread may install handlers; others pass their own event)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Progress:
    """A rich progress line on stderr (rows, rows/s, batches, rejected), or nothing."""

    def __init__(self, enabled: bool) -> None:
        self._progress = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("consuming"),
            TextColumn("{task.completed:>12,.0f} rows"),
            TextColumn("{task.fields[rate]:>9,.0f} rows/s"),
            TextColumn("{task.fields[batches]} batches"),
            TextColumn("{task.fields[rejected]} rejected"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task("consume", total=None, rate=0.0, batches=0, rejected=0)

    def __enter__(self) -> _Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, rows: int, seconds: float, batches: int, rejected: int) -> None:
        if self._progress is not None:
            rate = rows / seconds if seconds > 0 else 0.0
            self._progress.update(self._task, completed=rows, rate=rate, batches=batches, rejected=rejected)


class BatchingConsumer:
    """One consumer-group member feeding one batch store; `run()` is the bounded loop."""

    def __init__(
        self,
        settings: PipelineSettings,
        store: BatchStore,
        policy: BatchPolicy,
        group_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.group_id = group_id
        self.batch = OpenBatch(policy, clock)
        self.pending_rejects: list[Rejected] = []
        self.rejects = RejectLog(store.directory, len(store.entries))
        self.rows_read = 0
        self.rows_written = 0
        self.rejected = 0

    def _resync(
        self, consumer: KafkaConsumer, polled: dict[TopicPartition, list[Any]]
    ) -> dict[TopicPartition, list[Any]]:
        """After any assignment change: drop the open batch and make every assigned partition start right
        after what the manifest records; a partition the manifest never saw starts at its beginning,
        whatever the group committed (a fresh folder must get every row, not the group's leftovers).

        Returns the part of `polled` that already starts there (the listener's seek usually made it so);
        partitions whose records start elsewhere are sought back and read again.
        """
        # the dropped rows and rejects will be read, and counted, again: take them off the counts now
        self.rows_read -= self.batch.rows
        self.rejected -= len(self.pending_rejects)
        self.batch.clear()
        self.pending_rejects.clear()
        resume = self.store.resume_offsets()
        keep: dict[TopicPartition, list[Any]] = {}
        for tp in consumer.assignment():
            start = resume.get(tp.partition)
            if start is None:
                start = consumer.beginning_offsets([tp])[tp]
            records = polled.get(tp) or []
            if records and records[0].offset == start:
                keep[tp] = records
            elif records or consumer.position(tp) != start:
                consumer.seek(tp, start)
        log.info("assigned %s; resuming from manifest %s", sorted(consumer.assignment()), resume)
        return keep

    def _take(self, records_by_tp: dict[TopicPartition, list[Any]]) -> int:
        """Move one poll's messages into the open batch; returns how many messages came."""
        messages = 0
        for tp, records in records_by_tp.items():
            if not records:
                continue
            messages += len(records)
            rows, bad = parse_values([r.value for r in records])
            for index, reason in bad:
                r = records[index]
                self.pending_rejects.append(
                    Rejected(tp.partition, r.offset, _text(r.key), _text(r.value), reason)
                )
            self.rejected += len(bad)
            self.rows_read += len(rows)
            self.batch.add(tp.partition, records[0].offset, records[-1].offset, rows)
        return messages

    def _close_batch(self, consumer: KafkaConsumer) -> None:
        """Write the open batch, then the manifest (inside the store), then commit what it records."""
        number = self.store.next_batch
        table = self.batch.table()
        # rejects first: a crash before the manifest leaves lines of an unlisted batch, trimmed at start
        self.rejects.append(number, self.pending_rejects)
        entry = self.store.write_batch(table, self.batch.offsets)
        del table
        self.rows_written += entry.rows
        self.batch.clear()
        self.pending_rejects.clear()
        offsets = {
            TopicPartition(self.settings.topic, int(p)): OffsetAndMetadata(last + 1, "", -1)
            for p, (_, last) in entry.offsets.items()
        }
        try:
            consumer.commit(offsets)
        except KafkaError as exc:  # the manifest already holds the truth; the group merely lags
            log.warning("offset commit after batch %d failed (%s); the manifest is ahead", number, exc)
        log.info("batch %d: %d rows, offsets %s", number, entry.rows, entry.offsets)

    def _failure(self, exc: KafkaError) -> str:
        """One line for the user; the batch on hand is left to the next run, which reads it again."""
        if isinstance(exc, FencedInstanceIdError):
            return (
                f"another consumer joined group {self.group_id} as {self.group_id}-batcher and "
                "took this one's place (one process per group)"
            )
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__  # kafka-python names the class
        return f"Kafka at {self.settings.bootstrap} failed while consuming: {detail}"

    def run(
        self,
        max_batches: int | None = None,
        idle_timeout_s: float | None = None,
        stop: threading.Event | None = None,
        progress: bool = True,
    ) -> ConsumeSummary:
        stop = stop or threading.Event()
        listener = _Rebalances(self.store.resume_offsets)
        started = self.clock()
        consumer = _open_consumer(self.settings, self.group_id, listener)
        listener.consumer = consumer
        seen_generation = 0
        last_message = last_probe = self.clock()
        batches = 0
        try:
            with _stop_on_signals(stop), _Progress(progress) as bar:
                while not stop.is_set() and (max_batches is None or batches < max_batches):
                    wait = POLL_MS / 1000
                    left = self.batch.seconds_left()
                    if left is not None:
                        wait = min(wait, left)
                    room = self.batch.room()
                    polled = consumer.poll(
                        timeout_ms=int(wait * 1000), max_records=min(room or POLL_RECORDS, POLL_RECORDS)
                    )
                    now = self.clock()
                    if listener.generation != seen_generation:
                        seen_generation = listener.generation
                        polled = self._resync(consumer, polled)
                        last_message = now  # idle time counts from the assignment, not from the join
                    if self._take(polled):
                        last_message = now
                    if self.batch.is_due():  # never without rows: rejected messages alone stay pending
                        self._close_batch(consumer)
                        batches += 1
                    silent = now - last_message
                    if idle_timeout_s is not None and silent >= idle_timeout_s:
                        if self.batch.rows:
                            self._close_batch(consumer)
                            batches += 1
                        elif self.pending_rejects:
                            self.rejects.append(self.store.next_batch, self.pending_rejects)
                        log.info("no message for %.1f s: stopping", idle_timeout_s)
                        break
                    if silent >= PROBE_S and now - last_probe >= PROBE_S:
                        last_probe = now
                        admin_client(self.settings.bootstrap).close()  # gone: BrokerUnavailable, exit 3
                    bar.update(self.rows_read, self.clock() - started, batches, self.rejected)
                bar.update(self.rows_read, self.clock() - started, batches, self.rejected)
        except KafkaError as exc:  # poll, offsets, fencing: an infrastructure failure is exit 3, not a bug
            raise BrokerUnavailable(self._failure(exc)) from exc
        finally:
            consumer.close(autocommit=False, timeout_ms=5000)
        if self.batch.rows:
            log.info("stopped with %d rows in the open batch: the next run reads them again", self.batch.rows)
        return ConsumeSummary(self.rows_written, batches, self.rejected, self.clock() - started)


def consume(
    settings: PipelineSettings,
    out_dir: Path,
    batch_rows: int | None = None,
    window_s: float | None = None,
    max_batches: int | None = None,
    idle_timeout_s: float | None = None,
    fmt: Format = "parquet",
    progress: bool = True,
    group_id: str | None = None,
    stop: threading.Event | None = None,
) -> ConsumeSummary:
    """Consume `settings.topic` into batch files under `out_dir` until a stop condition holds.

    Stops at `max_batches` batches, after `idle_timeout_s` without a message (closing the open batch
    first), or when `stop` is set / SIGINT or SIGTERM arrives (the open batch is left to the next run).
    """
    policy = BatchPolicy(batch_rows, window_s)
    with BatchStore(out_dir, fmt) as store:  # BadInput at once when another consumer writes out_dir
        ensure_topic(settings.bootstrap, settings.topic, settings.partitions)  # BrokerUnavailable in seconds
        group_id = group_id or settings.consumer_group
        return BatchingConsumer(settings, store, policy, group_id).run(
            max_batches, idle_timeout_s, stop, progress
        )
