"""The stop flag of every long-running loop: SIGINT/SIGTERM set it, the loop ends its current step.

One place for the producer, the consumer, `train --watch`, the gateway's supervisor and the monitor.
It imports only the standard library, so any package (the gateway too) may use it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(
    stop: threading.Event | None = None, on_signal: Callable[[int], None] | None = None
) -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set `stop` (a new event if none) while the block runs; then `on_signal(signum)`.

    The previous handlers come back after the block, so a library caller (a test session, the demo)
    gets its Ctrl-C back. Only the main thread may install handlers: elsewhere the event is the only
    way in, set by whoever owns the thread.
    """
    stop = stop if stop is not None else threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, frame: object) -> None:
        stop.set()
        if on_signal is not None:
            on_signal(signum)

    previous = {sig: signal.signal(sig, handle) for sig in SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
