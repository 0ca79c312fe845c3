"""What every long-running ingest command shares: a stop flag set by SIGINT/SIGTERM, and a live
progress line on stderr."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set `stop` while the block runs; the previous handlers come back after it.

    Only the main thread may install handlers: elsewhere the caller's own event is the only way in.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class ConsumeProgress:
    """A rich progress line on stderr (rows, rows/s, batches, rejected), or nothing."""

    def __init__(self, enabled: bool, label: str = "consuming") -> None:
        self._progress = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn(label),
            TextColumn("{task.completed:>12,.0f} rows"),
            TextColumn("{task.fields[rate]:>9,.0f} rows/s"),
            TextColumn("{task.fields[batches]} batches"),
            TextColumn("{task.fields[rejected]} rejected"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(label, total=None, rate=0.0, batches=0, rejected=0)

    def __enter__(self) -> ConsumeProgress:
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
