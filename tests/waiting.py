"""Waiting on a condition instead of sleeping out a guess: poll until it holds, fail clearly at a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout_s: float, what: str | Callable[[], str], every_s: float = 0.1
) -> T:
    """Call `predicate` every `every_s` until it returns something true, and return that; fail after
    `timeout_s` naming what was awaited (`what`, or what it says then) and the last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() >= deadline:
            said = what if isinstance(what, str) else what()
            raise AssertionError(f"waited {timeout_s:g} s for {said}; last saw {got!r}")
        time.sleep(every_s)  # the poll interval: what is awaited happens in another thread or process
