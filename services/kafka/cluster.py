"""The embedded Kafka cluster: N KRaft nodes, each a broker and a controller voter; all on one host
(127.0.0.1 unless told otherwise), or one node per host (`MemberNode`) when the hosts share nothing.

Every node is one JVM from the same jars (`services.kafka.launcher`). A node owns `<home>/node-<i>/`
(storage, `server.properties`, `broker.log`, `broker.pid`); `<home>/cluster.json` records the node
count and cluster id the storage was formatted with, so a restart brings back the same cluster and a
different count (or another cluster's id) is refused rather than half-joined. It records too whether the
cluster requires authentication (`auth`, see services.kafka.auth): that is fixed when the storage is
formatted, since the users are seeded into it then.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.credentials import Credential
from core.errors import BadInput, BrokerUnavailable
from services.kafka import auth
from services.kafka.admin import admin_client, quorum_leader
from services.kafka.launcher import find_java, setup_jars, stop_pids
from services.kafka.node import HOST, EmbeddedNode
from services.processes import ServiceState, port_open


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID, base64 URL-safe without padding, as Kafka's Uuid prints it.

    One that starts with '-' would read as an option to the storage tool, so draw again.
    """
    while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cid


@dataclass(frozen=True)
class ClusterStatus:
    home: Path
    nodes: tuple[ServiceState, ...]  # the nodes the home runs: node i at index i - 1, or a member's one
    controller: int | None  # node id of the active controller (the KRaft quorum leader), if known
    size: int | None = None  # nodes of the whole cluster when the home runs only one of them (a member)
    auth: bool = False  # clients must log in (SASL/SCRAM-SHA-512) and need ACLs

    @property
    def running(self) -> bool:
        """Every node runs."""
        return all(n.running for n in self.nodes)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def describe(self) -> str:
        up = sum(n.running for n in self.nodes)
        controller = (
            f"active controller: node {self.controller}" if self.controller else "no active controller"
        )
        what = f"{len(self.nodes)}-node Kafka cluster"
        if self.size is not None:
            what = f"{self.nodes[0].name} of a {self.size}-node Kafka cluster"
        access = "SASL/SCRAM-SHA-512 and ACLs required" if self.auth else "no authentication"
        lines = [f"{what} in {self.home}: {up} running, {controller}, {access}"]
        for n in self.nodes:
            lines.append(n.line(mark="  (active controller)" if n.name == f"node {self.controller}" else ""))
        return "\n".join(lines)


class EmbeddedCluster:
    """N KRaft nodes on `host` from one set of jars; node i listens on port + 2(i-1), controller +1.

    With `auth`, clients log in with SASL/SCRAM-SHA-512 and need ACLs (services.kafka.auth): the users'
    kept credentials are in `<home>/credentials/`, `grant` gives the roles their rights on given names.
    """

    def __init__(
        self,
        home: Path,
        jars_dir: Path,
        nodes: int = 1,
        port: int = 9092,
        heap: str = "512m",
        host: str = HOST,
        auth: bool = False,
    ) -> None:
        if nodes < 1:
            raise BadInput(f"a cluster needs 1 node or more, not {nodes}")
        self.home = home.resolve()
        self.jars_dir = jars_dir
        self.nodes = nodes
        self.port = port
        self.heap = heap
        self.host = host
        self.auth = auth
        # the nodes this home runs (all of them here; a MemberNode runs one)
        self.members = tuple(EmbeddedNode.of(self.home, port, i, host) for i in range(1, nodes + 1))

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.members)

    @property
    def replication_factor(self) -> int:
        """Of the internal topics (offsets, transactions, share state), as of those btcflow creates."""
        return min(3, self.nodes)

    @property
    def voters(self) -> str:
        """The KRaft quorum, `id@host:port` of every node's controller, as controller.quorum.voters."""
        return ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.members)

    def node(self, node_id: int) -> EmbeddedNode:
        """Node `node_id`, counting from 1 as Kafka's node.id does."""
        if not 1 <= node_id <= self.nodes:
            raise BadInput(f"the cluster has nodes 1..{self.nodes}, not {node_id}")
        return self.members[node_id - 1]

    @property
    def _record(self) -> Path:
        return self.home / "cluster.json"

    def formatted_nodes(self) -> int | None:
        """How many nodes the storage in `home` was formatted for; None before the first start."""
        try:
            return int(json.loads(self._record.read_text())["nodes"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"{self._record} is damaged ({exc}): remove {self.home} to start afresh") from exc

    def formatted_auth(self) -> bool | None:
        """Whether the storage in `home` was formatted to require authentication; None before the first
        start. A home from before authentication existed has none: open."""
        try:
            return bool(json.loads(self._record.read_text()).get("auth", False))
        except FileNotFoundError:
            return None
        except (ValueError, AttributeError) as exc:
            raise BadInput(f"{self._record} is damaged ({exc}): remove {self.home} to start afresh") from exc

    @property
    def requires_auth(self) -> bool:
        """Whether clients must log in: as formatted, else as asked (a cluster not started yet)."""
        formatted = self.formatted_auth()
        return self.auth if formatted is None else formatted

    def check_layout(self) -> None:
        """Refuse a home formatted for another node count (or by the single-broker btcflow before it), or
        formatted with authentication when it is not asked for, or the other way round."""
        fix = "stop it (btcflow broker stop) and remove that folder, or set BTCFLOW_BROKER_DIR elsewhere"
        if (self.home / "data" / "meta.properties").exists() or (self.home / "broker.pid").exists():
            raise BadInput(f"{self.home} holds a broker from an older btcflow (no node-1/ folder): {fix}")
        formatted = self.formatted_nodes()
        if formatted is not None and formatted != self.nodes:
            raise BadInput(f"{self.home} holds a {formatted}-node Kafka cluster, not {self.nodes}: {fix}")
        self._check_auth(fix)

    def _check_auth(self, fix: str) -> None:
        """The users are seeded when the storage is formatted (the brokers log in to each other as
        admin from their first start), so authentication cannot be switched on or off afterwards."""
        formatted = self.formatted_auth()
        if formatted is None or formatted == self.auth or not any(n.formatted for n in self.members):
            return
        if formatted:
            raise BadInput(
                f"{self.home} holds a Kafka cluster that requires authentication: start it with --auth "
                f"(BTCFLOW_BROKER_AUTH=true), or {fix}"
            )
        raise BadInput(f"{self.home} holds a Kafka cluster formatted without authentication: {fix}")

    def admin_credential(self) -> Credential | None:
        """The super user's kept credential when the cluster requires authentication, else None."""
        if not self.requires_auth:
            return None
        return auth.role_credential(self.home, auth.ADMIN)

    def credential(self, role: str) -> Credential | None:
        """The kept credential of `role` (services.kafka.auth.ROLES, or admin) when the cluster requires
        authentication; None for an open cluster (or a role whose file this host does not keep)."""
        return auth.role_credential(self.home, role) if self.requires_auth else None

    def grant(self, names: auth.Names, timeout_s: float = 10.0) -> int:
        """Give the roles their ACLs on `names` (services.kafka.auth.role_acls), as admin; idempotent.
        Returns how many ACLs the roles hold there; 0 on an open cluster, which needs none."""
        admin = self.admin_credential()
        if admin is None:
            return 0
        client = admin_client(self.bootstrap, timeout_s, credential=admin)
        try:
            return auth.grant_roles(client, names)
        finally:
            client.close()

    def start(self, timeout_s: float = 90.0) -> str:
        """Start every node that does not run (idempotent); return the bootstrap list once all answer."""
        self.check_layout()
        self._start(list(self.members), timeout_s)
        return self.bootstrap

    def _start(self, nodes: list[EmbeddedNode], timeout_s: float) -> None:
        idle = [n for n in nodes if n.pid is None]
        started: dict[EmbeddedNode, subprocess.Popen[bytes]] = {}
        if idle:
            for n in idle:
                for port in (n.port, n.controller_port):
                    if port_open(n.host, port):
                        raise BrokerUnavailable(f"port {port} on {n.host} is taken by another process")
            java = find_java()
            classpath = f"{setup_jars(self.jars_dir)}/*"
            cluster_id = self._cluster_id()
            users = auth.kept_users(self.home) if self.auth else {}
            for n in idle:
                n.write_config(self.voters, self.replication_factor, users.get(auth.ADMIN))
            formats = {
                n: p
                for n in idle
                if (p := n.format_storage(java, classpath, cluster_id, users.values())) is not None
            }
            for n, proc in formats.items():
                _, err = proc.communicate()
                if proc.returncode != 0:
                    raise BrokerUnavailable(
                        f"formatting node {n.node_id}'s storage failed: {err.strip()[-300:]}"
                    )
            started = {n: n.start_jvm(java, classpath, self.heap) for n in idle}
        try:
            self._wait_ready(nodes, started, timeout_s)
            if self.auth:
                self._upsert_users()
        except BrokerUnavailable:
            stop_pids([n.pid_file for n in started], 30.0)
            raise

    def _upsert_users(self) -> None:
        """Set every role user's SCRAM credential to its kept file (seeded at format time already; this
        covers a file made anew, or a role added since the storage was formatted)."""
        users = auth.kept_users(self.home)
        client = admin_client(self.bootstrap, 10.0, credential=users[auth.ADMIN])
        try:
            auth.upsert_users(client, [users[role] for role in auth.ROLES])
        finally:
            client.close()

    def _cluster_id(self) -> str:
        """The id every node is formatted with, chosen once per home (before any node is formatted).
        Until a node is formatted, the record follows the authentication asked for."""
        with contextlib.suppress(FileNotFoundError):
            record = json.loads(self._record.read_text())
            if record.get("auth", False) != self.auth and not any(n.formatted for n in self.members):
                self._record.write_text(json.dumps(record | {"auth": self.auth}) + "\n")
            return str(record["cluster_id"])
        self.home.mkdir(parents=True, exist_ok=True)
        cid = new_cluster_id()
        record = {"nodes": self.nodes, "cluster_id": cid, "auth": self.auth}
        self._record.write_text(json.dumps(record) + "\n")
        return cid

    def _wait_ready(
        self,
        nodes: list[EmbeddedNode],
        started: dict[EmbeddedNode, subprocess.Popen[bytes]],
        timeout_s: float,
    ) -> None:
        deadline = time.monotonic() + timeout_s
        admin = self.admin_credential()
        waiting = list(nodes)
        while waiting:
            for n, proc in started.items():
                if proc.poll() is not None:
                    raise BrokerUnavailable(
                        f"node {n.node_id} died at start: {n.last_error()} (log: {n.log_file})"
                    )
            waiting = [n for n in waiting if not n.takes_requests(admin)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(str(n.node_id) for n in waiting)
                raise BrokerUnavailable(
                    f"node(s) {names} did not answer within {timeout_s:.0f}s (log: {waiting[0].log_file})"
                )
            time.sleep(0.3)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop every node the home holds, all at once (SIGTERM, SIGKILL after `timeout_s`).

        False if none was running. A pid file of the single-broker btcflow before clusters counts too.
        """
        pid_files = sorted(self.home.glob("node-*/broker.pid")) + [self.home / "broker.pid"]
        return stop_pids(pid_files, timeout_s)

    def status(self) -> ClusterStatus:
        """Every node of the home's cluster (as formatted, else as configured) and the active controller."""
        formatted = self.formatted_nodes() or self.nodes
        members = (
            self.members
            if formatted == self.nodes
            else tuple(EmbeddedNode.of(self.home, self.port, i, self.host) for i in range(1, formatted + 1))
        )
        states = tuple(n.state() for n in members)
        running = ",".join(s.address for s in states if s.running)
        leader = quorum_leader(running, self.admin_credential()) if running else None
        return ClusterStatus(self.home, states, leader, auth=self.requires_auth)


class EmbeddedBroker(EmbeddedCluster):
    """A one-node cluster, as btcflow ran before clusters: `address` and `log_file` are its node's."""

    def __init__(
        self, home: Path, jars_dir: Path, port: int = 9092, heap: str = "512m", auth: bool = False
    ) -> None:
        super().__init__(home, jars_dir, nodes=1, port=port, heap=heap, auth=auth)

    @property
    def address(self) -> str:
        return self.members[0].address

    @property
    def log_file(self) -> Path:
        return self.members[0].log_file
