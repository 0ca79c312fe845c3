"""The embedded single-node Kafka broker (KRaft, broker + controller) and the admin calls btcflow needs.

The broker is Apache Kafka's own jars, resolved from Maven Central by `pipeline/kafka/pom.xml`,
started as a detached JVM whose pid, storage and log live under one folder.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.errors import BrokerUnavailable
from pipeline.settings import PipelineSettings

log = logging.getLogger("pipeline")

KAFKA_DIR = Path(__file__).parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"

SERVER_PROPERTIES = """\
# Written by btcflow at every start; edit pipeline/broker.py instead.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes=8388608
log.retention.hours=168
"""


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


def free_port_pair() -> int:
    """A port p such that p and p+1 (the embedded broker's controller) are both free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return int(port)
    raise BrokerUnavailable("no free pair of ports on 127.0.0.1")


def admin_client(bootstrap: str, timeout_s: float = 5.0) -> KafkaAdminClient:
    """An admin client, or BrokerUnavailable within about `timeout_s` seconds."""
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            client_id="btcflow-admin",
        )
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka not reachable at {bootstrap} ({type(exc).__name__})") from exc


def ensure_topic(bootstrap: str, topic: str, partitions: int = 1) -> int:
    """Create `topic` if missing; return its partition count (an existing topic keeps its own)."""
    admin = admin_client(bootstrap)
    try:
        try:
            admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
            log.info("created topic %s with %d partition(s)", topic, partitions)
        except TopicAlreadyExistsError:
            pass
        for _ in range(50):  # metadata can lag a fresh topic by a few milliseconds
            described = admin.describe_topics([topic])
            if described and described[0].get("partitions"):
                return len(described[0]["partitions"])
            time.sleep(0.1)
        raise BrokerUnavailable(f"topic {topic} was created but never showed up in the metadata")
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {bootstrap} refused the topic {topic}: {exc}") from exc
    finally:
        admin.close()


def _cluster_id() -> str:
    """A Kafka cluster id: a random UUID, base64 URL-safe without padding, as Kafka's Uuid prints it.

    One that starts with '-' would read as an option to the storage tool, so draw again.
    """
    while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cid


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    address: str
    home: Path
    pid: int | None

    def describe(self) -> str:
        if self.running:
            return f"running at {self.address} (pid {self.pid}, home {self.home})"
        return f"not running (home {self.home})"


class EmbeddedBroker:
    """One KRaft node on 127.0.0.1, managed through a pid file in `home`."""

    def __init__(self, home: Path, jars_dir: Path, port: int = 9092, heap: str = "1g") -> None:
        self.home = home.resolve()
        self.jars_dir = jars_dir
        self.port = port
        self.controller_port = port + 1
        self.heap = heap

    @classmethod
    def from_settings(cls, settings: PipelineSettings) -> EmbeddedBroker:
        return cls(settings.broker_home, settings.kafka_jars, settings.broker_port, settings.broker_heap)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def _pid_file(self) -> Path:
        return self.home / "broker.pid"

    def _pid(self) -> int | None:
        try:
            pid = int(self._pid_file.read_text())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid

    def status(self) -> BrokerStatus:
        pid = self._pid()
        running = pid is not None and port_open("127.0.0.1", self.port)
        return BrokerStatus(running, self.address, self.home, pid)

    def start(self, timeout_s: float = 90.0) -> str:
        """Start the broker unless it runs already; return only once it answers."""
        if self._pid() is not None:
            self._wait_ready(timeout_s)
            return self.address
        for port in (self.port, self.controller_port):
            if port_open("127.0.0.1", port):
                raise BrokerUnavailable(f"port {port} on 127.0.0.1 is taken by another process")
        java = find_java()
        libs = setup_jars(self.jars_dir)
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        config.write_text(
            SERVER_PROPERTIES.format(
                port=self.port, controller_port=self.controller_port, data_dir=self.home / "data"
            )
        )
        classpath = f"{libs}/*"
        if not (self.home / "data" / "meta.properties").exists():
            formatted = subprocess.run(
                [
                    java,
                    "-cp",
                    classpath,
                    f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    _cluster_id(),
                    "-c",
                    str(config),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if formatted.returncode != 0:
                raise BrokerUnavailable(f"formatting Kafka storage failed: {formatted.stderr.strip()[-300:]}")
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                [
                    java,
                    f"-Xmx{self.heap}",
                    "-Xms256m",
                    "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(config),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the caller's terminal must not reach the broker
            )
        self._pid_file.write_text(str(proc.pid))
        try:
            self._wait_ready(timeout_s, proc)
        except BrokerUnavailable:
            self.stop()
            raise
        return self.address

    def _wait_ready(self, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise BrokerUnavailable(
                    f"the broker died at start: {self._last_error()} (log: {self.log_file})"
                )
            if port_open("127.0.0.1", self.port):
                try:
                    admin_client(self.address, timeout_s=2.0).close()
                    return
                except BrokerUnavailable:
                    pass
            time.sleep(0.3)
        raise BrokerUnavailable(f"the broker did not answer within {timeout_s:.0f}s (log: {self.log_file})")

    def _last_error(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "no log"
        errors = [ln for ln in lines if "ERROR" in ln or "Exception" in ln]
        return (errors or lines or ["no log"])[-1].strip()[:300]

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after `timeout_s`); False if it was not running."""
        pid = self._pid()
        if pid is None:
            self._pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            _reap(pid)
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        _reap(pid)
        self._pid_file.unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    """Collect the broker's exit status when this process started it (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def delete_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> bool:
    """Delete `topic` if it exists and wait until the broker forgets it; False if there was none."""
    admin = admin_client(bootstrap)
    try:
        if topic not in admin.list_topics():
            return False
        admin.delete_topics([topic])
        deadline = time.monotonic() + timeout_s
        while topic in admin.list_topics():
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"topic {topic} was not deleted within {timeout_s:.0f} s")
            time.sleep(0.2)
        return True
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {bootstrap} refused to delete {topic}: {exc}") from exc
    finally:
        admin.close()
