"""The optional prediction log: every answered prediction as one JSON message on a Kafka topic.

A request only appends what it answered to a bounded queue, under a lock held for an append, and never
waits: when the queue is full the rows are dropped and counted. A thread of the gateway turns the queue into
JSON lines every few milliseconds and writes them to a pipe; the process at its other end
(serving.publisher) owns the kafka-python producer. kafka-python's per-record Python, run in the gateway's
own process, would hold the GIL against the event loop (measured: a quarter of the GET rate); here the
gateway pays the JSON and a write. The publisher's counts come back on its stdout. A publisher that dies
is started again after a pause, and whatever it held is counted dropped.

A message (no key):
`{"time": "2026-01-02T03:04:05.678901+00:00", "model": {"name", "version", "run_id"},
  "inputs": {"open": 4.58, "volume": 1.5}, "outputs": {"predicted_high": 4.63, "predicted_low": 4.55}}`
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from serving.metrics import Metrics

log = logging.getLogger("serving")

TICK_S = 0.05  # how often the thread looks at the queue: a message's latency, not a request's
RESTART_S = 5.0  # before starting a publisher again after one died
PIPE_BYTES = 1 << 20  # the pipe to the publisher: about 8,000 messages in flight, where Linux allows it
ROOT = Path(__file__).resolve().parents[1]  # the folder holding the `serving` package, for the publisher

Answered = tuple[float, Mapping[str, str], Mapping[str, Sequence[Any]], Mapping[str, Sequence[Any]], int]


def messages(item: Answered) -> list[bytes]:
    """One JSON message per row of an answered request (when, model ref, input and output columns, rows).

    orjson writes the datetime itself (RFC 3339, microseconds): a third of the cost of `isoformat()`.
    orjson never writes a raw newline, so the messages travel to the publisher as lines.
    """
    at, model, inputs, outputs, rows = item
    when = datetime.fromtimestamp(at, UTC)
    if rows == 1:  # a GET
        row_in = {k: v[0] for k, v in inputs.items()}
        row_out = {k: v[0] for k, v in outputs.items()}
        return [orjson.dumps({"time": when, "model": model, "inputs": row_in, "outputs": row_out})]
    return [
        orjson.dumps(
            {
                "time": when,
                "model": model,
                "inputs": {k: v[i] for k, v in inputs.items()},
                "outputs": {k: v[i] for k, v in outputs.items()},
            }
        )
        for i in range(rows)
    ]


class PredictionLog:
    """Answered predictions to `topic`, fed by a thread of its own between `start()` and `stop()`."""

    def __init__(self, topic: str, bootstrap: str, capacity: int, metrics: Metrics | None = None) -> None:
        self.topic = topic
        self.bootstrap = bootstrap
        self.capacity = capacity
        self.metrics = metrics or Metrics()
        self._queue: deque[Answered] = deque()
        self._waiting = 0  # rows in the queue
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_s = 5.0
        self._dropped = self.metrics.log_dropped
        self._sent = self.metrics.log_sent

    # -- the request path ------------------------------------------------------------------------------
    def offer(
        self,
        model: Mapping[str, str],
        inputs: Mapping[str, Sequence[Any]],
        outputs: Mapping[str, Sequence[Any]],
        rows: int,
    ) -> None:
        """Queue one answered request's rows, or drop and count them when the queue is full. Never waits."""
        item = (time.time(), model, inputs, outputs, rows)
        with self._lock:
            if self._waiting + rows <= self.capacity:
                self._queue.append(item)
                self._waiting += rows
                return
        self._dropped.inc(rows)

    # -- the thread ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="btcflow-prediction-log", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Hand over what is queued; the publisher waits up to `timeout_s` for the broker, then exits."""
        if self._thread is not None:
            self._flush_s = timeout_s
            self._stopping.set()
            self._thread.join(2 * timeout_s + 5.0)
            self._thread = None

    def _take(self) -> list[Answered]:
        with self._lock:
            taken, self._queue = list(self._queue), deque()
            self._waiting = 0
        return taken

    def _run(self) -> None:
        publisher: PublisherProcess | None = None
        restart_at = 0.0
        while True:
            stopping = self._stopping.wait(TICK_S)
            taken = self._take()
            if publisher is not None and not publisher.alive():
                log.warning("prediction log: its publisher exited; starting another in %.0fs", RESTART_S)
                self._count(publisher.finish(0.0))
                publisher, restart_at = None, time.monotonic() + RESTART_S
            if publisher is None and time.monotonic() >= restart_at and not stopping:
                publisher = PublisherProcess(self.topic, self.bootstrap, self.capacity, self._flush_s)
            if taken:
                lines = [m for item in taken for m in messages(item)]
                if publisher is None or not publisher.write(lines):
                    self._dropped.inc(len(lines))
            if publisher is not None:
                self._count(publisher.read_counts())
            self.metrics.log_queue.set(self._waiting)
            if stopping:
                break
        if publisher is not None:
            self._count(publisher.finish(self._flush_s + 5.0))
        self.metrics.log_queue.set(0)

    def _count(self, delta: tuple[int, int]) -> None:
        sent, dropped = delta
        if sent:
            self._sent.inc(sent)
        if dropped:
            self._dropped.inc(dropped)


class PublisherProcess:
    """One `python -m serving.publisher` process and the counts it reported (as deltas since last read)."""

    def __init__(self, topic: str, bootstrap: str, capacity: int, flush_s: float) -> None:
        paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        cmd = [sys.executable, "-m", "serving.publisher", topic, bootstrap, str(capacity), str(flush_s)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with contextlib.suppress(OSError, AttributeError):  # Linux only; else the default 64 KiB
            fcntl.fcntl(self.proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[attr-defined]
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.written = 0  # lines handed over
        self.reported = (0, 0)  # its last cumulative (sent, dropped)
        self.counted = (0, 0)  # what this side already counted of them
        self._partial = b""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def write(self, lines: list[bytes]) -> bool:
        """Hand lines over (the pipe holds ~1 MiB; when full, this thread waits). False: it is gone."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"\n".join(lines) + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        self.written += len(lines)
        return True

    def read_counts(self) -> tuple[int, int]:
        """(sent, dropped) it reported since the last call."""
        assert self.proc.stdout is not None
        with contextlib.suppress(BlockingIOError, OSError, ValueError):
            while chunk := self.proc.stdout.read(65536):
                self._partial += chunk
        *lines, self._partial = self._partial.split(b"\n")
        if lines:
            sent, dropped = lines[-1].split()
            self.reported = (int(sent), int(dropped))
        delta = (self.reported[0] - self.counted[0], self.reported[1] - self.counted[1])
        self.counted = self.reported
        return delta

    def finish(self, timeout_s: float) -> tuple[int, int]:
        """Close its input, let it flush up to `timeout_s` (killed after), and return the last deltas;
        lines it took and never reported are counted dropped."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        os.set_blocking(self.proc.stdout.fileno(), True)
        self._partial += self.proc.stdout.read() or b""  # it exited: everything up to its end
        sent, dropped = self.read_counts()
        self.proc.stdout.close()
        lost = self.written - self.reported[0] - self.reported[1]
        return sent, dropped + max(0, lost)
