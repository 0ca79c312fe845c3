"""One node of the embedded Kafka cluster: a KRaft broker + controller voter in its own JVM, managed
through the pid file in `<home>/node-<i>/` beside its storage, `server.properties` and `broker.log`."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from btcflow.processes import port_open, wait_gone
from pipeline.broker import admin_client
from pipeline.errors import BrokerUnavailable
from pipeline.launcher import LOG4J_CONFIG, live_pid, stop_pids

if TYPE_CHECKING:
    from pipeline.cluster import EmbeddedCluster

SERVER_PROPERTIES = """\
# Written by btcflow at every start of this node; edit pipeline/node.py instead.
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}
num.partitions=1
auto.create.topics.enable=false
default.replication.factor={rf}
offsets.topic.replication.factor={rf}
offsets.topic.num.partitions=1
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={min_isr}
# A node that stops heartbeating is fenced after 6 s (default 9 s) and its partitions get a new
# leader from the in-sync replicas; never from outside them.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
message.max.bytes=8388608
log.retention.hours=168
"""


@dataclass(frozen=True)
class NodeState:
    node_id: int
    address: str
    pid: int | None
    running: bool  # the process lives and its client port answers


class EmbeddedNode:
    """One KRaft node (broker + controller voter) of an `EmbeddedCluster`, managed by its pid file."""

    def __init__(self, cluster: EmbeddedCluster, node_id: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.port = cluster.port + 2 * (node_id - 1)
        self.controller_port = self.port + 1
        self.dir = cluster.home / f"node-{node_id}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.dir / "broker.log"

    @property
    def config_file(self) -> Path:
        return self.dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.dir / "broker.pid"

    @property
    def pid(self) -> int | None:
        """The JVM's pid while it lives (a stale pid file, or one naming another process, gives None)."""
        return live_pid(self.pid_file)

    def state(self) -> NodeState:
        pid = self.pid
        return NodeState(
            self.node_id, self.address, pid, pid is not None and port_open("127.0.0.1", self.port)
        )

    def start(self, timeout_s: float = 90.0) -> str:
        """Start this node unless it runs; return its address once it answers (it needs a quorum)."""
        self.cluster.check_layout()
        self.cluster._start([self], timeout_s)
        return self.address

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout_s`; False if it was not running."""
        return stop_pids([self.pid_file], timeout_s)

    def kill(self) -> bool:
        """SIGKILL, as a crash would; returns once the process is gone. False if it was not running."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid)
        self.pid_file.unlink(missing_ok=True)
        return pid is not None

    def _write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        rf = self.cluster.replication_factor
        self.config_file.write_text(
            SERVER_PROPERTIES.format(
                node_id=self.node_id,
                voters=self.cluster.voters,
                port=self.port,
                controller_port=self.controller_port,
                data_dir=self.dir / "data",
                rf=rf,
                min_isr=min(2, rf),
            )
        )

    def _format(self, java: str, classpath: str, cluster_id: str) -> subprocess.Popen[str] | None:
        if (self.dir / "data" / "meta.properties").exists():
            return None
        return subprocess.Popen(
            [
                java,
                "-cp",
                classpath,
                f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.config_file),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _launch(self, java: str, classpath: str) -> subprocess.Popen[bytes]:
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                [
                    java,
                    f"-Xmx{self.cluster.heap}",
                    "-XX:+UseG1GC",
                    "-XX:MaxGCPauseMillis=20",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(self.config_file),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the caller's terminal must not reach the broker
            )
        self.pid_file.write_text(str(proc.pid))
        return proc

    def _answers(self) -> bool:
        """The node takes requests: a KRaft broker opens its port to clients only once unfenced."""
        if not port_open("127.0.0.1", self.port):
            return False
        try:
            admin_client(self.address, timeout_s=2.0).close()
        except BrokerUnavailable:
            return False
        return True

    def _last_error(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "no log"
        errors = [ln for ln in lines if "ERROR" in ln or "Exception" in ln]
        return (errors or lines or ["no log"])[-1].strip()[:300]
