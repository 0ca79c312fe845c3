"""One node of the embedded Kafka cluster: a KRaft broker + controller voter in its own JVM, managed
through the pid file in `<home>/node-<i>/` beside its storage, `server.properties` and `broker.log`.
It listens on its host's address only (127.0.0.1 unless told otherwise) and advertises that address."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from core import jvm
from core.credentials import Credential
from core.errors import BrokerUnavailable
from services.kafka.admin import admin_client
from services.kafka.auth import LISTENER, node_security, restrict, salted_scram
from services.kafka.launcher import KAFKA_MARKER, LOG4J_CONFIG
from services.processes import Supervised, port_open

HOST = "127.0.0.1"  # BTCFLOW_BROKER_HOST's default

SERVER_PROPERTIES = """\
# Written by btcflow at every start of this node; edit services/kafka/node.py instead.
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners={listener}://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners={listener}://{host}:{port}
controller.listener.names=CONTROLLER
{security}log.dirs={data_dir}
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

PLAINTEXT_SECURITY = """\
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
"""


@dataclass(frozen=True, kw_only=True)
class EmbeddedNode(Supervised):
    """One KRaft node (broker + controller voter) on `host`: clients on `port`, the quorum on
    `controller_port`."""

    node_id: int
    dir: Path
    controller_port: int

    @classmethod
    def of(cls, home: Path, base_port: int, node_id: int, host: str = HOST) -> EmbeddedNode:
        """Node `node_id` of a cluster on one host whose node 1 listens on `base_port`: it listens on
        base_port + 2(node_id - 1), its controller on the port after."""
        port = base_port + 2 * (node_id - 1)
        return cls.at(home, node_id, host, port, port + 1)

    @classmethod
    def at(cls, home: Path, node_id: int, host: str, port: int, controller_port: int) -> EmbeddedNode:
        """Node `node_id` on `host`:`port`, its controller on `controller_port`, its files in `home`."""
        folder = home / f"node-{node_id}"
        return cls(
            name=f"node {node_id}",
            address=f"{host}:{port}",
            host=host,
            port=port,
            pid_file=folder / "broker.pid",
            log_file=folder / "broker.log",
            marker=KAFKA_MARKER,
            node_id=node_id,
            dir=folder,
            controller_port=controller_port,
        )

    @property
    def config_file(self) -> Path:
        return self.dir / "server.properties"

    def takes_requests(self, admin: Credential | None = None) -> bool:
        """The node takes requests (from `admin` when it requires authentication): a KRaft broker opens
        its port to clients only once unfenced."""
        if not port_open(self.host, self.port):
            return False
        try:
            admin_client(self.address, timeout_s=2.0, credential=admin).close()
        except BrokerUnavailable:
            return False
        return True

    def write_config(self, voters: str, replication_factor: int, admin: Credential | None = None) -> None:
        """server.properties; with `admin`, an authenticating node (services.kafka.auth), whose file holds
        the admin's password and is therefore readable by its owner only."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_file.touch(mode=0o600)
        restrict(self.config_file)
        self.config_file.write_text(
            SERVER_PROPERTIES.format(
                listener=LISTENER if admin else "PLAINTEXT",
                security=node_security(admin) if admin else PLAINTEXT_SECURITY,
                node_id=self.node_id,
                voters=voters,
                host=self.host,
                port=self.port,
                controller_port=self.controller_port,
                data_dir=self.dir / "data",
                rf=replication_factor,
                min_isr=min(2, replication_factor),
            )
        )

    @property
    def formatted(self) -> bool:
        return (self.dir / "data" / "meta.properties").exists()

    def format_storage(
        self, java: str, classpath: str, cluster_id: str, users: Iterable[Credential] = ()
    ) -> subprocess.Popen[str] | None:
        """Format this node's storage with the cluster's id, and the SCRAM `users` seeded into its
        metadata, unless it is formatted already."""
        if self.formatted:
            return None
        scram = [arg for user in users for arg in ("--add-scram", salted_scram(user))]
        return subprocess.Popen(
            [
                java,
                *jvm.extra_options(),
                "-cp",
                classpath,
                f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.config_file),
                *scram,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def start_jvm(self, java: str, classpath: str, heap: str) -> subprocess.Popen[bytes]:
        cmd = [
            java,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            *jvm.extra_options(),
            "-cp",
            classpath,
            "kafka.Kafka",
            str(self.config_file),
        ]
        return self.launch(cmd)
