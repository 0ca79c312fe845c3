"""Hosts that share nothing, on one machine: what tests/test_shared_nothing.py runs btcflow's roles on.

A host is a Linux mount namespace (`unshare --mount`) held open by one idle process, with its own
loopback address (all of 127/8 is loopback on Linux: 127.0.0.N binds with no set-up) and its own folder
under one root in /var/tmp (not /tmp: every host has a private tmpfs on /tmp). Inside it, a private tmpfs
covers every other host's folder, so a role that reads another's local file finds nothing and fails
loudly. Commands enter the host with `nsenter`, in its folder, with an environment of their own
(BTCFLOW_DATA_DIR and HOME in that folder, no BTCFLOW_/MLFLOW_/SPARK_/HADOOP_ setting of the caller's).
Powering a host off kills every process in its namespace, whatever started it.

What hosts share is what machines of one cluster share: the installed software (the repository, its
venv, Java, the Kafka and Hadoop jars) and the network.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

from core import jvm

REPO = Path(__file__).resolve().parents[1]
ROOTS = Path("/var/tmp")  # not under /tmp: each host mounts its own /tmp
CALLERS_SETTINGS = ("BTCFLOW_", "MLFLOW_", "SPARK_", "PYSPARK_", "HADOOP_", "KAFKA_", "JAVA_TOOL_OPTIONS")


def unavailable() -> str | None:
    """Why this machine cannot make such hosts (a skip reason), or None when it can."""
    if os.geteuid() != 0:
        return (
            "hosts that share nothing need Linux mount namespaces (unshare --mount): run as root, as CI does"
        )
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} not found (util-linux): this machine cannot make a host of its own"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /tmp"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        return (
            f"this machine cannot make a mount namespace: {probe.stderr.strip()[-200:] or 'unshare failed'}"
        )
    return None


def btcflow(*args: str) -> list[str]:
    """The btcflow command line of this checkout, as a host runs it."""
    return [sys.executable, "-m", "btcflow.cli", *args]


class Host:
    """One host: its address, its folder (its only place on the machine's disk) and its namespace."""

    def __init__(self, root: Path, name: str, address: str) -> None:
        self.name = name
        self.address = address
        self.folder = root / name
        self._holder: subprocess.Popen[str] | None = None
        self.namespace = ""  # /proc/<pid>/ns/mnt of its processes, e.g. mnt:[4026532174]
        self._runs = 0

    @property
    def data(self) -> Path:
        """Its BTCFLOW_DATA_DIR."""
        return self.folder / "data"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    def boot(self, others: list[Path]) -> None:
        """Make its namespace: a private /tmp and /dev/shm, an empty tmpfs over each other host's folder."""
        for folder in (self.folder, self.data, self.logs, self.folder / "home"):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)  # PostgreSQL runs as the postgres user when the tests run as root
        masks = [*others, Path("/tmp"), Path("/dev/shm")]
        script = "set -e; " + "".join(
            f"mount -t tmpfs -o mode=1777 tmpfs {shlex.quote(str(m))}; " for m in masks
        )
        self._holder = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script + "echo up; exec sleep infinity",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert self._holder.stdout is not None
        if self._holder.stdout.readline().strip() != "up":
            _, err = self._holder.communicate(timeout=10)
            raise RuntimeError(f"host {self.name} did not boot: {err.strip()}")
        self.namespace = os.readlink(f"/proc/{self._holder.pid}/ns/mnt")

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a command on this host: the caller's minus its btcflow, MLflow, Spark and
        Hadoop settings, with this host's data dir and home, and `extra`. The JVM options of the suite
        (BTCFLOW_JVM_OPTS, tests/conftest.py) stay: like Java itself, installed alike on every machine."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(CALLERS_SETTINGS) or k == jvm.ENV}
        env.pop("TMPDIR", None)
        env.update(
            PYTHONPATH=str(REPO),
            HOME=str(self.folder / "home"),
            BTCFLOW_DATA_DIR=str(self.data),
        )
        env.update(extra or {})
        return env

    def command(self, argv: list[str]) -> list[str]:
        """`argv` as run inside this host, in its folder."""
        assert self._holder is not None, f"host {self.name} is not booted"
        return ["nsenter", f"--target={self._holder.pid}", "--mount", f"--wd={self.folder}", "--", *argv]

    def run(
        self, argv: list[str], env: Mapping[str, str] | None = None, timeout: float = 180, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` on this host to its end; with `check`, a non-zero exit fails naming the host and
        its stderr."""
        done = subprocess.run(
            self.command(argv),
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"on {self.name} ({self.address}): {shlex.join(argv)} exited {done.returncode}: "
                f"{done.stderr.strip()[-1500:]}"
            )
        return done

    def spawn(self, argv: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        """Start `argv` on this host and go on; its output goes to a file in logs/ (`output(proc)`)."""
        self._runs += 1
        log = self.logs / f"run-{self._runs}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                self.command(argv),
                env=self.env(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
        proc.log = log  # type: ignore[attr-defined]
        return proc

    def processes(self, but_holder: bool = False) -> list[int]:
        """Every process in this host's namespace (the idle one holding it too, unless `but_holder`),
        whoever started it."""
        found = []
        holder = self._holder.pid if self._holder is not None and but_holder else None
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != holder:
                with contextlib.suppress(OSError):
                    if os.readlink(entry / "ns" / "mnt") == self.namespace:
                        found.append(int(entry.name))
        return found

    def signal_all(self, signum: int) -> list[int]:
        """Send `signum` to every process of the host; the pids it went to."""
        pids = self.processes() if self.namespace else []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        return pids

    def reap(self) -> None:
        if self._holder is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._holder.wait(timeout=1)


def output(proc: subprocess.Popen[str]) -> str:
    """What a spawned command printed so far."""
    return Path(proc.log).read_text(errors="replace")  # type: ignore[attr-defined]


class Network:
    """The hosts of one test, under /var/tmp/btcflow-hosts-<uuid>/<host>/, removed with them."""

    def __init__(self) -> None:
        self.root = ROOTS / f"btcflow-hosts-{uuid.uuid4().hex[:12]}"
        self.hosts: dict[str, Host] = {}

    def add(self, name: str, address: str) -> Host:
        host = Host(self.root, name, address)
        self.hosts[name] = host
        return host

    def boot(self) -> None:
        self.root.mkdir(mode=0o755)
        self.root.chmod(0o755)
        for host in self.hosts.values():
            host.folder.mkdir(mode=0o755)
        for host in self.hosts.values():
            host.boot([h.folder for h in self.hosts.values() if h is not host])

    def power_off(self, grace_s: float = 5.0) -> dict[str, list[int]]:
        """Every host off, then their folders removed: SIGTERM to each process of theirs (a PostgreSQL
        left running then removes its shared memory), SIGKILL to what is left after `grace_s`. Returns
        the pids that were running, by host."""
        running = {name: host.signal_all(signal.SIGTERM) for name, host in self.hosts.items()}
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(h.processes() for h in self.hosts.values() if h.namespace):
            time.sleep(0.2)
        for host in self.hosts.values():
            host.signal_all(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(h.processes() for h in self.hosts.values() if h.namespace):
            time.sleep(0.1)
        for host in self.hosts.values():
            host.reap()
        shutil.rmtree(self.root, ignore_errors=True)
        return {name: pids for name, pids in running.items() if pids}


@contextlib.contextmanager
def network(addresses: Mapping[str, str]) -> Iterator[Network]:
    """Booted hosts named as `addresses` says ({name: 127.0.0.N}); powered off and removed on the way
    out, whatever happened."""
    net = Network()
    for name, address in addresses.items():
        net.add(name, address)
    try:
        net.boot()
        yield net
    finally:
        net.power_off()
