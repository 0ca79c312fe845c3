"""Replay a Bitcoin minute file into Kafka: one message per good row in file order, bad rows to `<topic>.dlq`.

The file is streamed (constant memory for 7M rows). A row costs a split, six `float()` calls and one
orjson dump; records then go into kafka-python's batches in slabs (`pipeline.records`), since
`KafkaProducer.send` alone would cost more than everything else together. Several processes
(`workers`) can each send a contiguous slice of the file to their own partition, which keeps file
order inside each partition.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from pipeline.broker import ensure_topic
from pipeline.errors import BadInput, BrokerUnavailable, PipelineError
from pipeline.records import BulkAppender, compression
from pipeline.rows import RowChecker, header_columns, raw_text
from pipeline.settings import PipelineSettings
from pipeline.slices import Slice, lines, slices

log = logging.getLogger("pipeline")

BULK_ROWS = 2_000  # rows handed to the bulk appender at once when not paced
PROGRESS_EVERY = 5_000  # rows between two progress updates: a shared counter, not a per-row cost


@dataclass(frozen=True)
class Pacing:
    """How fast rows go out: as fast as possible unless a rate or a jitter is given."""

    rate: float | None = None  # rows per second, held steady
    jitter: tuple[float, float] | None = None  # seconds, a random sleep between rows
    limit: int | None = None  # rows read from the file (sent + rejected), then stop


def parse_jitter(text: str) -> tuple[float, float]:
    """`MIN_MS:MAX_MS` → (min, max) seconds."""
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        raise BadInput(f"--jitter must be MIN_MS:MAX_MS like 5:50, not {text!r}") from None
    if not 0 <= low <= high:
        raise BadInput(f"--jitter needs 0 <= MIN_MS <= MAX_MS, not {text!r}")
    return low / 1000, high / 1000


@dataclass(frozen=True)
class ProduceSummary:
    sent: int
    rejected: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return (self.sent + self.rejected) / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"sent {self.sent:,} rows, rejected {self.rejected:,}, in {self.seconds:.1f} s "
            f"({self.rows_per_s:,.0f} rows/s)"
        )


def kafka_producer(bootstrap: str) -> KafkaProducer:
    """The producer every replay uses: durable (acks=all, idempotent, retried) and batched for speed.

    kafka-python 3 supports idempotence (producer id and sequence numbers) and turns it on by default;
    it is set explicitly here. Compression (see `records.compression`) beats none here: kafka-python's
    CRC32C is pure Python unless the `crc32c` package is installed, and it walks the compressed bytes.
    """
    try:
        return KafkaProducer(
            bootstrap_servers=bootstrap,
            client_id="btcflow-producer",
            acks="all",
            enable_idempotence=True,
            retries=10,
            retry_backoff_ms=200,
            delivery_timeout_ms=30_000,
            request_timeout_ms=10_000,
            max_block_ms=10_000,
            linger_ms=20,
            batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
            compression_type=compression(),
            bootstrap_timeout_ms=5_000,
        )
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka not reachable at {bootstrap} ({type(exc).__name__})") from exc


class _Stop:
    """SIGINT/SIGTERM set the flag; the loop finishes its row, flushes and reports."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, lambda *_: self.event.set())
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def send_slice(
    bootstrap: str,
    topic: str,
    path: Path,
    header: bytes,
    part: Slice,
    pacing: Pacing,
    stop: threading.Event,
    on_progress: Callable[[int, int, int], None] = lambda sent, rejected, read_bytes: None,
    bulk: bool = True,
) -> ProduceSummary:
    """Send one slice of the file; the single-process replay is the one slice of the whole file."""
    columns = header_columns(header)
    checker = RowChecker(*columns) if columns else RowChecker()
    dlq = f"{topic}.dlq"
    failures: list[BaseException] = []
    on_error = failures.append
    sent = rejected = read_bytes = 0
    number = part.first_line - 1
    rate_gap = 1.0 / pacing.rate if pacing.rate else 0.0
    paced = bool(rate_gap or pacing.jitter)
    chunk = 1 if paced else BULK_ROWS  # a paced row leaves at once; a fast replay goes in slabs
    pending: list[tuple[bytes, bytes]] = []
    started = time.monotonic()
    producer = kafka_producer(bootstrap)
    appender = (
        BulkAppender(producer, topic, part.partition) if bulk and BulkAppender.supported(producer) else None
    )

    def push() -> None:
        if appender is not None:
            appender.append(pending)
        else:
            for key, value in pending:
                producer.send(topic, value, key, partition=part.partition).add_errback(on_error)
        pending.clear()

    try:
        producer.partitions_for(topic)  # metadata once, before the first slab
        for line in lines(path, part):
            number += 1
            read_bytes += len(line)
            if not line.strip():
                continue  # a blank line (the file's last, often) is no row
            checked = checker.check(line)
            if isinstance(checked, str):
                message = {"line": number, "raw": raw_text(line), "reason": checked}
                dead = producer.send(dlq, orjson.dumps(message), str(number).encode(), partition=0)
                dead.add_errback(on_error)
                rejected += 1
            else:
                key, row = checked
                value = orjson.dumps(  # a dict literal: twice as fast as dict(zip(FIELDS, row))
                    {
                        "Timestamp": row[0],
                        "Open": row[1],
                        "High": row[2],
                        "Low": row[3],
                        "Close": row[4],
                        "Volume": row[5],
                    }
                )
                pending.append((key, value))
                sent += 1
                if len(pending) >= chunk:
                    push()
            done = sent + rejected
            if done % PROGRESS_EVERY == 0:
                on_progress(sent, rejected, read_bytes)
            if stop.is_set() or (pacing.limit is not None and done >= pacing.limit):
                break
            if rate_gap:
                ahead = started + done * rate_gap - time.monotonic()
                if ahead > 0.001:
                    time.sleep(ahead)
            if pacing.jitter:
                time.sleep(random.uniform(*pacing.jitter))
            if failures:
                break
        push()
        producer.flush(timeout=30)
        if appender is not None:
            failures.extend(appender.errors())
    except KafkaError as exc:  # a queue that did not drain: the broker is gone
        raise BrokerUnavailable(f"Kafka at {bootstrap} stopped taking rows ({type(exc).__name__})") from exc
    finally:
        with contextlib.suppress(KafkaError):
            producer.close(timeout=5)
    if failures:
        raise BrokerUnavailable(f"Kafka at {bootstrap} did not take every row: {failures[0]!r}")
    on_progress(sent, rejected, read_bytes)
    return ProduceSummary(sent, rejected, time.monotonic() - started)


def produce(
    settings: PipelineSettings,
    path: Path,
    *,
    pacing: Pacing | None = None,
    workers: int = 1,
    progress: bool = True,
    bulk: bool = True,
) -> ProduceSummary:
    """Replay `path` into `settings.topic`; what the CLI and the demo call.

    `bulk=False` sends every row through `KafkaProducer.send` (the benchmark's comparison).
    """
    pacing = pacing or Pacing()
    if not path.is_file():
        raise BadInput(f"input file not found: {path}")
    if workers < 1:
        raise BadInput(f"--workers must be 1 or more, not {workers}")
    if pacing.limit is not None and workers > 1:
        log.info("--limit takes the first rows of the file: one worker")
        workers = 1
    partitions = ensure_topic(settings.bootstrap, settings.topic, max(settings.partitions, workers))
    ensure_topic(settings.bootstrap, f"{settings.topic}.dlq", 1)
    if partitions < workers:
        log.warning("topic %s has %d partition(s) for %d workers", settings.topic, partitions, workers)
    header, parts = slices(path, workers, partitions)
    size = path.stat().st_size
    total = pacing.limit if pacing.limit is not None else None
    with _Stop() as stop, _progress_bar(progress, size if total is None else total) as show:
        if workers == 1:

            def report(sent: int, rejected: int, read_bytes: int) -> None:
                show(sent + rejected, sent + rejected if total is not None else read_bytes)

            topic = settings.topic
            return send_slice(
                settings.bootstrap, topic, path, header, parts[0], pacing, stop.event, report, bulk
            )
        return _run_workers(settings, path, header, parts, pacing, stop.event, show, total is not None, bulk)


def _run_workers(
    settings: PipelineSettings,
    path: Path,
    header: bytes,
    parts: list[Slice],
    pacing: Pacing,
    stop: threading.Event,
    show: Callable[[int, int], None],
    by_rows: bool,
    bulk: bool,
) -> ProduceSummary:
    """One process per slice; the parent draws the bar from shared counters and forwards a stop."""
    ctx = mp.get_context("spawn")
    counters = ctx.Array("q", 3 * len(parts), lock=False)
    results = ctx.Queue()
    worker_pacing = Pacing(pacing.rate / len(parts) if pacing.rate else None, pacing.jitter, None)
    procs = [
        ctx.Process(
            target=_worker,
            args=(
                i,
                settings.bootstrap,
                settings.topic,
                path,
                header,
                part,
                worker_pacing,
                counters,
                results,
                bulk,
            ),
            daemon=True,
        )
        for i, part in enumerate(parts)
    ]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    outcomes: list[Any] = []
    stopped = False
    while len(outcomes) < len(procs):
        if stop.is_set() and not stopped:
            stopped = True
            for proc in procs:
                if proc.pid is not None and proc.is_alive():
                    os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(Exception):
            outcomes.append(results.get(timeout=0.2))
        rows = sum(counters[3 * i] + counters[3 * i + 1] for i in range(len(parts)))
        show(rows, rows if by_rows else sum(counters[3 * i + 2] for i in range(len(parts))))
        if len(outcomes) < len(procs) and not any(p.is_alive() for p in procs) and results.empty():
            raise PipelineError("a producer worker died without a word (see the log)")
    for proc in procs:
        proc.join(timeout=10)
    errors = [o for o in outcomes if isinstance(o, str)]
    if errors:
        raise BrokerUnavailable(errors[0])
    sent = sum(o.sent for o in outcomes)
    rejected = sum(o.rejected for o in outcomes)
    return ProduceSummary(sent, rejected, time.monotonic() - started)


def _worker(
    index: int,
    bootstrap: str,
    topic: str,
    path: Path,
    header: bytes,
    part: Slice,
    pacing: Pacing,
    counters: Any,
    results: Any,
    bulk: bool,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides, and forwards SIGTERM

    def report(sent: int, rejected: int, read_bytes: int) -> None:
        counters[3 * index], counters[3 * index + 1], counters[3 * index + 2] = sent, rejected, read_bytes

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        results.put(send_slice(bootstrap, topic, path, header, part, pacing, stop, report, bulk))
    except PipelineError as exc:
        results.put(str(exc))


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[int, int], None]]:
    """A rich bar on stderr: rows, rows/s and the ETA from the bytes read (or rows, under --limit)."""
    if not enabled:
        yield lambda rows, completed: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    started = time.monotonic()
    with Progress(
        TextColumn("producing"),
        BarColumn(),
        TextColumn("{task.fields[rows]:>12,} rows  {task.fields[speed]:>8,.0f} rows/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("produce", total=total, rows=0, speed=0.0)

        def show(rows: int, completed: int) -> None:
            speed = rows / max(time.monotonic() - started, 1e-6)
            bar.update(task, completed=completed, rows=rows, speed=speed)

        yield show
