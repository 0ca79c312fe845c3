"""The one shape of every service btcflow runs (a Kafka node, a Spark daemon, PostgreSQL, the MLflow
server): a detached process known by its pid file.

A service is started in its own session (Ctrl-C in the caller's terminal never reaches it), its output
goes to a log file, and its pid to a pid file, so any later process (the CLI, a test) can find, stop or
kill it. A pid file counts only while its process runs and its command line still carries the service's
marker (a pid reused by another program is not ours). `Supervised` holds those facts for one process;
each service module says only what is its own (its command, its readiness, its configuration).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("services")


@dataclass(frozen=True)
class ServiceState:
    """One supervised process as `status` shows it."""

    name: str
    address: str
    pid: int | None
    running: bool  # the process lives and answers

    def line(self, width: int = 21, mark: str = "") -> str:
        state = "running" if self.running else "starting" if self.pid else "not running"
        pid = f"pid {self.pid}" if self.pid else "-"
        return f"  {self.name:<10} {self.address:<{width}} {pid:<11} {state}{mark}"


@dataclass(frozen=True)
class Supervised:
    """One detached process btcflow runs: where its pid and its output go, and how to tell it answers."""

    name: str
    address: str  # what the user is shown (host:port, or a URL)
    host: str
    port: int  # answers once the service serves (a TCP connect, or `probe` when set)
    pid_file: Path
    log_file: Path
    marker: bytes  # in its command line while it is ours
    probe: str | None = None  # an http URL that answers 200 once it serves, where a port is not enough

    @property
    def pid(self) -> int | None:
        """Its pid while it runs (a stale pid file, or one naming another process, gives None)."""
        return live_pid(self.pid_file, self.marker)

    def answers(self) -> bool:
        return http_ok(self.probe) if self.probe else port_open(self.host, self.port)

    def state(self) -> ServiceState:
        pid = self.pid
        return ServiceState(self.name, self.address, pid, pid is not None and self.answers())

    def launch(
        self, cmd: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        return launch(cmd, self.log_file, self.pid_file, env, cwd)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout_s`; False if it was not running."""
        return stop_pids([self.pid_file], timeout_s, self.marker, self.name)

    def kill(self) -> bool:
        """SIGKILL, as a crash would; returns once the process is gone. False if it was not running."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(pid)
        self.pid_file.unlink(missing_ok=True)
        return pid is not None

    def last_error(self, keywords: Sequence[str] = ("ERROR", "Exception", "FATAL")) -> str:
        return last_line(self.log_file, keywords)


def launch(
    cmd: Sequence[str],
    log_file: Path,
    pid_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `cmd` detached, appending its output to `log_file`, and record its pid in `pid_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,  # Ctrl-C in the caller's terminal must not reach the service
        )
    pid_file.write_text(str(proc.pid))
    return proc


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """The service answers GET `url` with 200 (an HTTP service's readiness probe)."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def live_pid(pid_file: Path, marker: bytes) -> int | None:
    """The pid a pid file names (its first line) while that process runs with `marker` in its command
    line; else None."""
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (FileNotFoundError, PermissionError, ValueError):
        return None
    try:
        if not alive(pid):
            return None
    except PermissionError:  # alive, but another user's: not ours
        return None
    with contextlib.suppress(OSError):  # Linux: make sure the pid was not reused by another program
        if marker not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    return pid


def stop_pids(pid_files: list[Path], timeout_s: float, marker: bytes, what: str = "service") -> bool:
    """SIGTERM every live pid at once, SIGKILL what is left after `timeout_s`; remove the pid files.

    True when something was running.
    """
    pids = [pid for f in pid_files if (pid := live_pid(f, marker)) is not None]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    left = list(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [pid for pid in left if alive(pid)]
    for pid in left:
        log.warning("%s pid %d ignored SIGTERM for %.0f s: SIGKILL", what, pid, timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid)
    for f in pid_files:
        f.unlink(missing_ok=True)
    return bool(pids)


def alive(pid: int) -> bool:
    """The process runs: a zombie (dead, waiting for a parent that is not us to reap it) does not.

    A SIGKILLed JVM shows as a zombie as soon as its main thread is gone, while its other threads still
    exit and its sockets are still open (seen: an HDFS NameNode's port answering a connect then): it
    counts as running until its last thread is gone, so a port is free once `alive` says False."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # Linux: the state follows the last ')' of /proc/<pid>/stat
        if Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z":
            return True
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    return True


def wait_gone(pid: int) -> None:
    """Block until `pid` is gone (reaped when it is our child, so no zombie is left behind)."""
    try:
        os.waitpid(pid, 0)
        return
    except ChildProcessError:  # started by another process (the CLI): poll
        pass
    while alive(pid):
        time.sleep(0.05)


def _reap(pid: int) -> None:
    """Collect the exit status when this process started it (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def last_line(log_file: Path, keywords: Sequence[str] = ("ERROR", "Exception", "FATAL")) -> str:
    """The last line of a service's log naming an error (else its last line), for a one-line message."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "no log"
    errors = [ln for ln in lines if any(k in ln for k in keywords)]
    return (errors or lines or ["no log"])[-1].strip()[:300]
