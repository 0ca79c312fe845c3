"""`btcflow produce`: replay a Bitcoin minute file into Kafka, in one process or one per slice.

This module sets the run up (topics, where a resumed run picks up, signals, the progress bar) and
runs the slices (`pipeline.replay.send_slice`): the whole file in this process, or with `workers`
one process per contiguous slice, each to its own partition, which keeps file order inside each
partition.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import BadInput, BtcflowError
from core.progress import RowProgress
from core.signals import stop_on_signals
from pipeline.broker import ensure_topic
from pipeline.delivery import DELIVERY_TIMEOUT_S, backstop
from pipeline.replay import Pacing, ProduceSummary, Progress, Replay, parse_jitter, send_slice
from pipeline.resume import Resume, resume_points
from pipeline.settings import PipelineSettings
from pipeline.slices import Slice, slices
from services.kafka.auth import PRODUCER

__all__ = ["Pacing", "ProduceSummary", "parse_jitter", "produce"]  # what the CLI, demo and bench use

log = logging.getLogger("pipeline")


def produce(
    settings: PipelineSettings,
    path: Path,
    *,
    pacing: Pacing | None = None,
    workers: int = 1,
    progress: bool = True,
    bulk: bool = True,
    resume: bool = False,
    deadline_s: float = DELIVERY_TIMEOUT_S,
) -> ProduceSummary:
    """Replay `path` into `settings.topic`; what the CLI and the demo call.

    `resume` first reads where each partition ends and skips the rows (and DLQ lines) already there.
    `bulk=False` sends every row through `KafkaProducer.send` (the benchmark's comparison).
    `deadline_s` is Kafka's delivery timeout: how long a row may wait for Kafka, retries included.
    """
    pacing = pacing or Pacing()
    if not path.is_file():
        raise BadInput(f"input file not found: {path}")
    if workers < 1:
        raise BadInput(f"--workers must be 1 or more, not {workers}")
    if pacing.limit is not None and workers > 1:
        log.info("--limit takes the first rows of the file: one worker")
        workers = 1
    credential = settings.kafka_credential(PRODUCER)
    bootstrap = settings.bootstrap
    partitions = ensure_topic(bootstrap, settings.topic, max(settings.partitions, workers), credential)
    ensure_topic(bootstrap, f"{settings.topic}.dlq", 1, credential)
    if partitions < workers and not resume:  # --resume refuses it below, in one line
        log.warning("topic %s has %d partition(s) for %d workers", settings.topic, partitions, workers)
    header, parts = slices(path, workers, partitions)
    if resume:
        resumes = resume_points(bootstrap, settings.topic, parts, backstop(deadline_s), credential)
    else:
        resumes = [Resume() for _ in parts]
    job = Replay(bootstrap, settings.topic, path, header, pacing, bulk, deadline_s, credential)
    by_rows = pacing.limit is not None  # the bar counts rows under --limit, else bytes
    total = pacing.limit if pacing.limit is not None else path.stat().st_size
    bar = RowProgress(progress, "producing", total=total, transient=True)
    with stop_on_signals() as stop, bar:

        def report(sent: int, rejected: int, skipped: int, read_bytes: int) -> None:
            """The bar's position is the bytes read (rows under --limit); `skipping` while a resumed
            run reads past the rows the topic already holds."""
            rows = sent + rejected + skipped
            label = "skipping" if skipped and not sent + rejected else "producing"
            bar.update(rows, done=rows if by_rows else read_bytes, label=label)

        if workers == 1:
            summary = send_slice(job, parts[0], stop, report, resumes[0])
        else:
            summary = _run_workers(job, parts, resumes, stop, report)
    return replace(summary, resumed=resume)


def _run_workers(
    job: Replay,
    parts: list[Slice],
    resumes: list[Resume],
    stop: threading.Event,
    report: Progress,
) -> ProduceSummary:
    """One process per slice; the parent draws the bar from shared counters and forwards a stop."""
    ctx = mp.get_context("spawn")
    counters = ctx.Array("q", 4 * len(parts), lock=False)  # sent, rejected, skipped, bytes per worker
    results = ctx.Queue()
    rate = job.pacing.rate / len(parts) if job.pacing.rate else None
    worker_job = replace(job, pacing=Pacing(rate, job.pacing.jitter, None))
    procs = [
        ctx.Process(target=_worker, args=(i, worker_job, part, resume, counters, results), daemon=True)
        for i, (part, resume) in enumerate(zip(parts, resumes, strict=True))
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
        report(*(sum(counters[4 * i + k] for i in range(len(parts))) for k in range(4)))
        if len(outcomes) < len(procs) and not any(p.is_alive() for p in procs) and results.empty():
            raise BtcflowError("a producer worker died without a word (see the log)")
    for proc in procs:
        proc.join(timeout=10)
    errors = [o for o in outcomes if isinstance(o, BtcflowError)]
    if errors:
        raise errors[0]
    done: list[ProduceSummary] = outcomes
    return ProduceSummary(
        sum(o.sent for o in done),
        sum(o.rejected for o in done),
        time.monotonic() - started,
        sum(o.skipped for o in done),
        sum(o.skipped_dead for o in done),
    )


def _worker(index: int, job: Replay, part: Slice, resume: Resume, counters: Any, results: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides, and forwards SIGTERM
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = os.getppid()

    def orphaned() -> None:  # a parent killed by SIGKILL forwards nothing: stop like on SIGTERM
        while not stop.wait(0.5):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=orphaned, name="btcflow-parent-watch", daemon=True).start()

    def report(sent: int, rejected: int, skipped: int, read_bytes: int) -> None:
        base = 4 * index
        counters[base], counters[base + 1], counters[base + 2], counters[base + 3] = (
            sent,
            rejected,
            skipped,
            read_bytes,
        )

    try:
        results.put(send_slice(job, part, stop, report, resume))
    except BtcflowError as exc:
        results.put(type(exc)(str(exc)))  # the type carries the exit status
