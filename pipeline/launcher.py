"""What running Kafka on this machine takes: its jars, a Java, free ports, and detached JVMs by pid file.

The jars are Apache Kafka's own, resolved from Maven Central by `pipeline/kafka/pom.xml`. A JVM is
started detached (its own session) and known afterwards only by the pid file it left, so any later
process (the CLI, a test) can find, stop or kill it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from pipeline.errors import BrokerUnavailable

log = logging.getLogger("pipeline")

KAFKA_DIR = Path(__file__).parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"


def setup_jars(jars_dir: Path) -> Path:
    """Resolve the Kafka jars with Maven into `jars_dir/libs`, once per version of the pom."""
    libs, stamp = jars_dir / "libs", jars_dir / "pom.sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerUnavailable("Maven (mvn) not found on PATH: it is needed once to resolve the Kafka jars")
    staging = jars_dir / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    log.info("resolving Kafka jars with Maven into %s", libs)
    done = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines() or ["no output"]
        raise BrokerUnavailable(f"Maven could not resolve the Kafka jars: {lines[-1]}")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    stamp.write_text(digest)
    return libs


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise BrokerUnavailable("Java not found (set JAVA_HOME or put java 17+ on PATH)")
    return java


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port_block(n: int) -> int:
    """A port p such that p..p+n-1 are all free on 127.0.0.1 (a cluster of k nodes needs 2k)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n - 1 <= 65535 and all(_bindable(p) for p in range(base + 1, base + n)):
            return base
    raise BrokerUnavailable(f"no block of {n} free ports on 127.0.0.1")


def free_port_pair() -> int:
    """A port p such that p and p+1 (a single node's controller) are both free on 127.0.0.1."""
    return free_port_block(2)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def live_pid(pid_file: Path) -> int | None:
    """The pid a pid file names while that process is a running Kafka JVM; None otherwise."""
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        if not _alive(pid):
            return None
    except PermissionError:  # alive, but another user's: not our JVM
        return None
    with contextlib.suppress(OSError):  # Linux: make sure the pid was not reused by another program
        if b"kafka.Kafka" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    return pid


def stop_pids(pid_files: list[Path], timeout_s: float) -> bool:
    """SIGTERM every live pid at once, SIGKILL what is left after `timeout_s`; remove the pid files."""
    pids = [pid for f in pid_files if (pid := live_pid(f)) is not None]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if _alive(pid)]
    for pid in alive:
        log.warning("Kafka pid %d ignored SIGTERM for %.0f s: SIGKILL", pid, timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid)
    for f in pid_files:
        f.unlink(missing_ok=True)
    return bool(pids)


def _alive(pid: int) -> bool:
    """The process runs: a zombie (dead, waiting for a parent that is not us to reap it) does not."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # Linux: the state follows the last ')' of /proc/<pid>/stat
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    return True


def wait_gone(pid: int) -> None:
    """Block until `pid` is gone (reaped when it is our child, so no zombie is left behind)."""
    try:
        os.waitpid(pid, 0)
        return
    except ChildProcessError:  # started by another process (the CLI): poll
        pass
    while _alive(pid):
        time.sleep(0.05)


def _reap(pid: int) -> None:
    """Collect the JVM's exit status when this process started it (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
