"""Following the registry: one thread per gateway process refreshes it on a timer, at once when nudged,
and soon after another worker of the same gateway signals a change.

Polling every `poll_interval_s` is the fallback that always works. A webhook delivery reaches only one
of the gateway's worker processes: that worker nudges its own follower and bumps a small file in the
run folder the workers share (BTCFLOW_RUN_DIR, made by `btcflow serve`); every follower looks at the
file's mtime every TICK_S, so all workers refresh within a fraction of a second of the delivery.

The follower reads time and waits through a `Clock` (the real one by default), so tests can drive its
timer deterministically instead of counting calls inside wall-clock windows.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger("serving")

CHANGED = "registry-changed"  # the file in the run folder whose mtime says "the registry changed"
TICK_S = 0.2


class Clock(Protocol):
    """Where the follower reads the time and waits: the system's by default, a simulated one in tests."""

    def monotonic(self) -> float: ...

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        """Block until `event` is set (then True) or `timeout_s` has passed (then False)."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        return event.wait(timeout_s)


def signal_change(run_dir: Path) -> None:
    """Tell every worker of this gateway that the registry changed: a new mtime on the shared file."""
    path = run_dir / CHANGED
    path.touch(exist_ok=True)
    now = time.time_ns()
    os.utime(path, ns=(now, now))


class Follower:
    """Calls `refresh` now, then every `interval_s`, on `nudge()`, and when the run folder's file moves."""

    def __init__(
        self,
        refresh: Callable[[], object],
        interval_s: float,
        run_dir: Path | None = None,
        tick_s: float = TICK_S,
        clock: Clock | None = None,
    ) -> None:
        self.refresh, self.interval_s, self.tick_s = refresh, interval_s, tick_s
        self.clock: Clock = SystemClock() if clock is None else clock
        self.changed = run_dir / CHANGED if run_dir is not None else None
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def nudge(self) -> None:
        """Refresh as soon as the thread is free (this process heard the registry changed)."""
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self.run, name="registry-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _stamp(self) -> int | None:
        if self.changed is None:
            return None
        try:
            return self.changed.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def run(self) -> None:
        """Follow in the calling thread until `stop()` (`start()` runs this in a thread of its own)."""
        clock = self.clock
        first, stamp, due = True, self._stamp(), clock.monotonic()
        while not self._stopping:
            left = due - clock.monotonic()
            woke = False
            if left > 0:
                woke = clock.wait(self._wake, left if self.changed is None else min(self.tick_s, left))
                if self._stopping:
                    return
            seen = self._stamp()
            if not (woke or seen != stamp or clock.monotonic() >= due):
                continue
            self._wake.clear()
            stamp = seen
            try:
                self.refresh()
            except Exception:  # never let the follower die: the next tick tries again
                log.exception("registry check failed")
            if first:  # MLflow, SQLAlchemy and the models are loaded now: keep their objects out of gc passes
                gc.freeze()
                first = False
            due = clock.monotonic() + self.interval_s
