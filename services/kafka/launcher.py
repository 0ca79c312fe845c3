"""What running Kafka on this machine takes: its jars, a Java, free ports, and detached JVMs by pid file.

The jars are Apache Kafka's own, resolved from Maven Central by `services/kafka/pom.xml`. A JVM is
started detached (its own session) and known afterwards only by the pid file it left, so any later
process (the CLI, a test) can find, stop or kill it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
from pathlib import Path

from core.errors import BrokerUnavailable
from services import processes
from services.maven import copy_dependencies

log = logging.getLogger("services")

KAFKA_DIR = Path(__file__).parent
POM = KAFKA_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"


def setup_jars(jars_dir: Path) -> Path:
    """Resolve the Kafka jars with Maven into `jars_dir/libs`, once per version of the pom."""
    libs, stamp = jars_dir / "libs", jars_dir / "pom.sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    staging = jars_dir / "libs.partial"
    log.info("resolving Kafka jars with Maven into %s", libs)
    if failure := copy_dependencies(POM, staging):
        raise BrokerUnavailable(f"could not resolve the Kafka jars: {failure}")
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


def free_port_block(n: int, host: str = "127.0.0.1") -> int:
    """A port p such that p..p+n-1 are all free on `host` (a cluster of k nodes needs 2k)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((host, 0))
            base = int(s.getsockname()[1])
        if base + n - 1 <= 65535 and all(_bindable(p, host) for p in range(base + 1, base + n)):
            return base
    raise BrokerUnavailable(f"no block of {n} free ports on {host}")


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A port p such that p and p+1 (a single node's controller) are both free on `host`."""
    return free_port_block(2, host)


def _bindable(port: int, host: str) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


KAFKA_MARKER = b"kafka.Kafka"


def stop_pids(pid_files: list[Path], timeout_s: float) -> bool:
    """SIGTERM every live Kafka pid at once, SIGKILL what is left after `timeout_s`; remove the pid files."""
    return processes.stop_pids(pid_files, timeout_s, KAFKA_MARKER, "Kafka")
