"""One slice of the minute file into Kafka: one message per good row in file order, bad rows to `<topic>.dlq`.

The file is streamed (constant memory for 7M rows). A row costs a split, six `float()` calls and one
orjson dump; records then go into kafka-python's batches in slabs (`pipeline.records`), since
`KafkaProducer.send` alone would cost more than everything else together. A resumed slice first reads
past the rows its partition already holds (`pipeline.resume`). Kafka that does not take a row within
the delivery deadline (`pipeline.delivery`) stops the slice with one line saying how to resume.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from kafka.errors import KafkaError

from core.credentials import Credential
from core.errors import BadInput, BrokerUnavailable
from pipeline.delivery import (
    DELIVERY_TIMEOUT_S,
    SendWindow,
    backstop,
    close,
    failure_line,
    flush,
    kafka_producer,
    refusal,
)
from pipeline.records import BulkAppender
from pipeline.resume import Resume
from pipeline.rows import RowChecker, header_columns, raw_text
from pipeline.slices import Slice, lines

BULK_ROWS = 2_000  # rows handed to the bulk appender at once when not paced
PROGRESS_EVERY = 5_000  # rows between two progress updates: a shared counter, not a per-row cost

Progress = Callable[[int, int, int, int], None]  # (sent, rejected, skipped, bytes read)


@dataclass(frozen=True)
class Pacing:
    """How fast rows go out: as fast as possible unless a rate or a jitter is given."""

    rate: float | None = None  # rows per second, held steady
    jitter: tuple[float, float] | None = None  # seconds, a random sleep between rows
    limit: int | None = None  # rows read from the file (sent + rejected + skipped), then stop


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
    skipped: int = 0  # good rows already in the topic (--resume)
    skipped_dead: int = 0  # bad rows already in the DLQ (--resume)
    resumed: bool = False

    @property
    def rows_per_s(self) -> float:
        return (self.sent + self.rejected) / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        done = (
            f"sent {self.sent:,} rows, rejected {self.rejected:,}, in {self.seconds:.1f} s "
            f"({self.rows_per_s:,.0f} rows/s)"
        )
        if not self.resumed:
            return done
        return (
            f"skipped {self.skipped:,} rows already in the topic and {self.skipped_dead:,} "
            f"already in the DLQ, {done}"
        )


@dataclass(frozen=True)
class Replay:
    """What every slice of one run shares."""

    bootstrap: str
    topic: str
    path: Path
    header: bytes
    pacing: Pacing = Pacing()
    bulk: bool = True  # False: every row through `KafkaProducer.send` (the benchmark's comparison)
    deadline_s: float = DELIVERY_TIMEOUT_S  # Kafka's delivery timeout: past it the run stops
    credential: Credential | None = None  # who the producer logs in as (None: an open cluster)


def send_slice(
    job: Replay,
    part: Slice,
    stop: threading.Event,
    on_progress: Progress = lambda sent, rejected, skipped, read_bytes: None,
    resume: Resume | None = None,
) -> ProduceSummary:
    """Send one slice of the file; the single-process replay is the one slice of the whole file."""
    columns = header_columns(job.header)
    checker = RowChecker(*columns) if columns else RowChecker()
    topic, dlq, pacing = job.topic, f"{job.topic}.dlq", job.pacing
    after = resume.after if resume else None  # rows up to this Timestamp are in the partition
    dead_lines = resume.dead_lines if resume else frozenset()
    failures: list[BaseException] = []
    on_error = failures.append
    sent = rejected = skipped = skipped_dead = read_bytes = 0
    number = part.first_line - 1
    rate_gap = 1.0 / pacing.rate if pacing.rate else 0.0
    chunk = 1 if rate_gap or pacing.jitter else BULK_ROWS  # a paced row leaves at once
    pending: list[tuple[bytes, bytes]] = []
    started = time.monotonic()
    paced_from: float | None = None
    wait_s = backstop(job.deadline_s)
    window = SendWindow(wait_s)
    producer = kafka_producer(job.bootstrap, job.deadline_s, job.credential)
    appender = (
        BulkAppender(producer, topic, part.partition, wait_s)
        if job.bulk and BulkAppender.supported(producer)
        else None
    )

    def push() -> None:
        if appender is not None:
            appender.append(pending)
        else:
            for key, value in pending:
                future = producer.send(topic, value, key, partition=part.partition).add_errback(on_error)
                window.add(future)
        pending.clear()

    abandon = True  # until every row is flushed: a failure closes without sending the rest
    try:
        producer.partitions_for(topic)  # metadata once, before the first slab
        producer.partitions_for(dlq)
        for line in lines(job.path, part):
            number += 1
            read_bytes += len(line)
            if not line.strip():
                continue  # a blank line (the file's last, often) is no row
            checked = checker.check(line)
            fresh = True
            if isinstance(checked, str):
                if number in dead_lines:
                    skipped_dead += 1
                    fresh = False
                else:
                    message = {"line": number, "raw": raw_text(line), "reason": checked}
                    dead = producer.send(dlq, orjson.dumps(message), str(number).encode(), partition=0)
                    window.add(dead.add_errback(on_error))
                    rejected += 1
            else:
                key, row = checked
                if after is not None:
                    if row[0] <= after:
                        skipped += 1
                        fresh = False
                    elif not skipped:
                        raise BadInput(
                            f"--resume: partition {part.partition} of {topic} ends at Timestamp {after!r}, "
                            f"before line {number} ({key.decode()}), the first row it should hold: it "
                            "holds another file, or was written with another --workers"
                        )
                    else:
                        after = None
                if fresh:
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
            done = sent + rejected + skipped + skipped_dead
            if done % PROGRESS_EVERY == 0:
                on_progress(sent, rejected, skipped + skipped_dead, read_bytes)
            if stop.is_set() or failures or (pacing.limit is not None and done >= pacing.limit):
                break
            if not fresh:
                continue  # skipped rows are not paced
            if rate_gap:
                paced_from = paced_from or time.monotonic()
                ahead = paced_from + (sent + rejected) * rate_gap - time.monotonic()
                if ahead > 0.001:
                    time.sleep(ahead)
            if pacing.jitter:
                time.sleep(random.uniform(*pacing.jitter))
        if not failures:
            push()
            flush(producer, wait_s)
        if appender is not None:
            failures.extend(appender.errors())
        abandon = bool(failures)
    except KafkaError as exc:  # a failure kafka-python reported, or a wait past the deadline
        failures.append(exc)
    finally:
        close(producer, abandon)
    if failures:
        refused = refusal(job.bootstrap, topic, failures[0], job.credential)
        if refused is not None:
            raise refused
        raise BrokerUnavailable(failure_line(job.bootstrap, failures[0], job.deadline_s))
    on_progress(sent, rejected, skipped + skipped_dead, read_bytes)
    return ProduceSummary(sent, rejected, time.monotonic() - started, skipped, skipped_dead)
