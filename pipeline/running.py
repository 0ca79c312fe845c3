"""What every long-running ingest command shares: a stop flag set by SIGINT/SIGTERM, and a live
progress display on stderr (the producer's bar with its ETA, the consumer's open-ended line)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator

Show = Callable[[int, int, bool], None]  # the producer's bar: (rows read, bar position, skipping)


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


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int) -> Iterator[Show]:
    """A rich bar on stderr: rows read, rows/s and the ETA from the bytes read (or rows, under --limit).

    While a resumed run reads past the rows the topic already holds, it says `skipping`.
    """
    if not enabled:
        yield lambda rows, completed, skipping: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    started = time.monotonic()
    with Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        TextColumn("{task.fields[rows]:>12,} rows  {task.fields[speed]:>8,.0f} rows/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("producing", total=total, rows=0, speed=0.0)

        def show(rows: int, completed: int, skipping: bool) -> None:
            speed = rows / max(time.monotonic() - started, 1e-6)
            description = "skipping" if skipping else "producing"
            bar.update(task, completed=completed, rows=rows, speed=speed, description=description)

        yield show
