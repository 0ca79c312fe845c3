"""What `--promote` hands a challenger to: training's champion/challenger gate, in a child process.

The live verdict only says a challenger did better on the last minutes of the stream; the gate decides on
rows none of the versions trained on (the batch files), and refuses one that does not beat the naive
baseline: training.gate.promote_best with require_baseline, the function `btcflow promote --best
--require-baseline` calls, recorded as made `by` monitor. It starts Spark, so it runs in a child
(`python -m monitoring.promotion <model>`, the monitor's training settings in its environment) in a
session of its own: the monitor keeps polling, committing and answering signals meanwhile, never holds a
driver JVM (nor a standalone cluster's cores) after the gate, and a stop ends the child's whole process
group, its JVM included. One gate runs at a time; a model handed over meanwhile waits its turn.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from training.settings import TrainingSettings

log = logging.getLogger("monitoring")

SETTINGS_ENV = "BTCFLOW_MONITOR_GATE_SETTINGS"  # the parent's TrainingSettings, as JSON
TERM_S = 1.0  # a gate told to stop gets this long before its process group is SIGKILLed

Command = Callable[[str], Sequence[str]]  # model kind -> the child's command line


def gate_command(kind: str) -> list[str]:
    return [sys.executable, "-m", "monitoring.promotion", kind]


@dataclass
class _Child:
    kind: str
    process: subprocess.Popen[bytes]
    output: IO[bytes]


class Gates:
    """The gate children of one monitor: start one per hand-off (queued while one runs), poll, stop."""

    def __init__(self, settings: TrainingSettings, command: Command = gate_command) -> None:
        self.settings = settings
        self.command = command
        self.child: _Child | None = None
        self.waiting: deque[str] = deque()

    @property
    def running(self) -> bool:
        return self.child is not None

    def hand(self, kind: str) -> str:
        """Start the gate for `kind`, or queue it behind the one running; what happened, in one line."""
        if self.child is not None:
            if kind != self.child.kind and kind not in self.waiting:
                self.waiting.append(kind)
            return f"queued behind the gate of {self.child.kind}"
        output = tempfile.TemporaryFile()  # noqa: SIM115 - read and closed when the gate ends
        env = {**os.environ, SETTINGS_ENV: self.settings.model_dump_json()}
        process = subprocess.Popen(
            list(self.command(kind)),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: a stop reaches the JVM it starts too
        )
        self.child = _Child(kind, process, output)
        return f"gate started (pid {process.pid})"

    def poll(self) -> tuple[str, str] | None:
        """(kind, what the gate said) once the running gate has ended; the next one waiting starts."""
        child = self.child
        if child is None or child.process.poll() is None:
            return None
        self.child = None
        _end_group(child.process.pid)  # whatever the child left behind (a JVM still shutting down)
        said = _read(child.output)
        if child.process.returncode != 0:
            said = f"did not run (exit {child.process.returncode}): {said or 'no output'}"
        if self.waiting:
            self.hand(self.waiting.popleft())
        return child.kind, said

    def stop(self) -> None:
        """End the running gate and everything it started: SIGTERM to its group, SIGKILL after TERM_S;
        reaped before this returns. Queued hand-offs are dropped."""
        self.waiting.clear()
        child, self.child = self.child, None
        if child is None:
            return
        _signal_group(child.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(TERM_S)
        _signal_group(child.process.pid, signal.SIGKILL)
        child.process.wait()
        child.output.close()
        log.info("promotion gate of %s stopped", child.kind)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left in it
        os.killpg(pgid, signum)


def _end_group(pgid: int) -> None:
    """SIGTERM what is left of an ended gate's group (its JVM exits with it anyway), SIGKILL after TERM_S."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + TERM_S
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


def _read(output: IO[bytes]) -> str:
    """The child's last non-empty line (its result, or the error it ended on)."""
    output.seek(0)
    lines = [ln.strip() for ln in output.read().decode(errors="replace").splitlines() if ln.strip()]
    output.close()
    return lines[-1] if lines else ""


def main(argv: Sequence[str] | None = None) -> int:
    """The child: `btcflow promote --best --require-baseline --model KIND` as made by the monitor.
    Prints the gate's line; an error is one line and the CLI contract's exit status."""
    from core import logs
    from core.errors import BtcflowError
    from training.gate import promote_best

    (kind,) = argv if argv is not None else sys.argv[1:]
    logs.configure(logs.level_from(False, False))
    settings = TrainingSettings.model_validate_json(os.environ[SETTINGS_ENV])
    try:
        print(promote_best(settings, kind, require_baseline=True, by="monitor").message, flush=True)
    except BtcflowError as exc:  # any error raised on purpose: its line and the contract's status
        print(f"{type(exc).__name__}: {exc}", flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
