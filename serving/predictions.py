"""The optional prediction log: every answered prediction as one JSON message on a Kafka topic.

A request only appends what it answered to a bounded queue, under a lock held for an append, and never
waits: when the queue is full the rows are dropped and counted. Every few milliseconds a task on the app's
event loop turns the queue into JSON lines and writes what the pipe takes, never waiting on it, to a
publisher process (serving.publisher) that owns the kafka-python producer; the publisher's counts come
back on its stdout. Why so: kafka-python's ~20 µs of Python per record, in a thread of the gateway, held
the GIL against the event loop and cost the GET rate a quarter (twice its CPU share). What is left here,
the JSON and a write, runs on the loop itself between requests, with no thread to hand the GIL to. A
publisher that dies is started again after a pause, and whatever it held is counted dropped.

A message (no key):
`{"time": "2026-01-02T03:04:05.678901+00:00", "model": {"name", "version", "run_id"},
  "inputs": {"open": 4.58, "volume": 1.5}, "outputs": {"predicted_high": 4.63, "predicted_low": 4.55}}`
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import select
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

from core.credentials import Credential
from serving.metrics import Metrics

log = logging.getLogger("serving")

TICK_S = 0.05  # how often the pump looks at the queue: a message's latency, not a request's
FLUSH_S = 5.0  # at stop, the most the publisher waits for the broker to acknowledge what it holds
RESTART_S = 5.0  # before starting a publisher again after one died
USERNAME_VAR, PASSWORD_VAR = "BTCFLOW_KAFKA_USERNAME", "BTCFLOW_KAFKA_PASSWORD"  # the publisher's login
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
    """Answered predictions to `topic`, pumped to a publisher process between `start()` and `stop()`."""

    def __init__(
        self,
        topic: str,
        bootstrap: str,
        capacity: int,
        metrics: Metrics | None = None,
        credential: Credential | None = None,
    ) -> None:
        self.topic = topic
        self.credential = credential
        self.bootstrap = bootstrap
        self.capacity = capacity
        self.metrics = metrics or Metrics()
        self._queue: deque[Answered] = deque()
        self._waiting = 0  # rows in the queue
        self._lock = threading.Lock()  # the spark engine answers from the threadpool
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._publisher: PublisherProcess | None = None
        self._restart_at = 0.0
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

    # -- the pump, a task on the app's event loop ---------------------------------------------------
    def start(self) -> None:
        """Start pumping (call it on the app's event loop: the lifespan)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._pump(), name="btcflow-prediction-log")

    async def stop(self) -> None:
        """Hand over what is queued, then let the publisher flush (FLUSH_S at most) and exit."""
        if self._task is None:
            return
        self._stopping = True
        await self._task
        self._task = None
        publisher, self._publisher = self._publisher, None
        if publisher is not None:  # blocking waits: off the event loop
            self._count(await asyncio.to_thread(publisher.finish, FLUSH_S))
        self.metrics.log_queue.set(0)

    async def _pump(self) -> None:
        while not self._stopping:
            await asyncio.sleep(TICK_S)
            try:
                self._tick()
            except Exception:  # the log must never take the gateway down: say it, wait, go on
                log.exception("prediction log: pumping failed; trying again in %.0fs", RESTART_S)
                self._restart_at = time.monotonic() + RESTART_S

    def _tick(self) -> None:
        """Hand the queue to the publisher as JSON lines (without waiting: what the pipe does not take
        stays with the publisher's handle, up to `capacity` lines), and count what it reported."""
        with self._lock:
            taken, self._queue = list(self._queue), deque()
            self._waiting = 0
        publisher = self._publisher
        if publisher is not None and not publisher.alive():
            log.warning("prediction log: its publisher exited; starting another in %.0fs", RESTART_S)
            self._count(publisher.finish(0.0))
            publisher = self._publisher = None
            self._restart_at = time.monotonic() + RESTART_S
        if publisher is None and time.monotonic() >= self._restart_at and not self._stopping:
            publisher = self._publisher = PublisherProcess(
                self.topic, self.bootstrap, self.capacity, self.credential
            )
        if taken:
            lines = [m for item in taken for m in messages(item)]
            if publisher is None or not publisher.hand_over(lines):  # gone, or `capacity` lines behind
                self._dropped.inc(len(lines))
        if publisher is not None:
            self._count(publisher.read_counts())
        self.metrics.log_queue.set(self._waiting)

    def _count(self, delta: tuple[int, int]) -> None:
        sent, dropped = delta
        if sent:
            self._sent.inc(sent)
        if dropped:
            self._dropped.inc(dropped)


class PublisherProcess:
    """One `python -m serving.publisher` process, what is still to be written to it, and its counts."""

    def __init__(
        self, topic: str, bootstrap: str, capacity: int, credential: Credential | None = None
    ) -> None:
        paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        env.pop(USERNAME_VAR, None)
        env.pop(PASSWORD_VAR, None)
        if credential is not None:  # through the environment: a password never goes on a command line
            env |= {USERNAME_VAR: credential.username, PASSWORD_VAR: credential.password}
        cmd = [sys.executable, "-m", "serving.publisher", topic, bootstrap, str(capacity), str(FLUSH_S)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        with contextlib.suppress(OSError, AttributeError):  # Linux only; else the default 64 KiB
            fcntl.fcntl(self.stdin, fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[attr-defined]
        os.set_blocking(self.stdin, False)
        os.set_blocking(self.stdout, False)
        self.capacity = capacity
        self.unwritten = bytearray()  # handed over, not yet taken by the pipe
        self.unwritten_lines = 0
        self.handed = 0  # lines handed over in all
        self.reported = (0, 0)  # its last cumulative (sent, dropped)
        self.counted = (0, 0)  # what this side already counted of them
        self._partial = b""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def hand_over(self, lines: list[bytes]) -> bool:
        """Take lines: written as far as the pipe takes them now, the rest kept for the next call. False
        (nothing taken: the caller drops them) when `capacity` lines already wait here. Lines taken by a
        process that is gone are counted dropped by `finish()`."""
        if self.unwritten_lines >= self.capacity:
            self._write()
            return False
        self.unwritten += b"\n".join(lines) + b"\n"
        self.unwritten_lines += len(lines)
        self.handed += len(lines)
        self._write()
        return True

    def _write(self) -> None:
        if not self.unwritten:
            return
        try:
            written = os.write(self.stdin, self.unwritten)
        except OSError:  # the pipe is full (BlockingIOError), or the process is gone
            return
        self.unwritten_lines -= self.unwritten.count(b"\n", 0, written)
        del self.unwritten[:written]

    def read_counts(self) -> tuple[int, int]:
        """(sent, dropped) it reported since the last call."""
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(self.stdout, 65536):
                self._partial += chunk
        *lines, self._partial = self._partial.split(b"\n")
        if lines:
            sent, dropped = lines[-1].split()
            self.reported = (int(sent), int(dropped))
        delta = (self.reported[0] - self.counted[0], self.reported[1] - self.counted[1])
        self.counted = self.reported
        return delta

    def finish(self, timeout_s: float) -> tuple[int, int]:
        """Write what is left, close its input, let it flush (killed `timeout_s` + 5 s after), and return
        the last deltas; lines it never reported on are counted dropped."""
        deadline = time.monotonic() + timeout_s + 5.0
        while self.unwritten and time.monotonic() < deadline and self.alive():
            select.select([], [self.stdin], [], max(0.0, min(0.1, deadline - time.monotonic())))
            self._write()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        sent, dropped = self.read_counts()  # it exited: everything it wrote is in the pipe
        self.proc.stdout.close()
        lost = self.handed - self.reported[0] - self.reported[1]
        return sent, dropped + max(0, lost)
