"""core.signals: the one stop flag of every loop (producer, consumer, watch, gateway, monitor)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from core.signals import SIGNALS, stop_on_signals


@pytest.mark.parametrize("sig", SIGNALS)
def test_a_signal_sets_the_flag_and_the_handlers_come_back(sig: signal.Signals) -> None:
    before = {s: signal.getsignal(s) for s in SIGNALS}
    seen: list[int] = []
    with stop_on_signals(on_signal=seen.append) as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), sig)  # the handler runs in this (the main) thread
        assert stop.wait(5) and seen == [sig]
    assert {s: signal.getsignal(s) for s in SIGNALS} == before


def test_the_callers_event_is_the_flag() -> None:
    mine = threading.Event()
    with stop_on_signals(mine) as stop:
        assert stop is mine
        os.kill(os.getpid(), signal.SIGTERM)
        assert mine.wait(5)


def test_off_the_main_thread_it_installs_nothing() -> None:
    before = {s: signal.getsignal(s) for s in SIGNALS}
    inside: dict[int, object] = {}

    def run() -> None:
        with stop_on_signals() as stop:
            inside.update({s: signal.getsignal(s) for s in SIGNALS})
            assert not stop.is_set()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert inside == before
