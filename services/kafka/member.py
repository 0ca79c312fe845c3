"""One node of a Kafka cluster spread over hosts that share nothing: this host runs node I only.

Each host starts its own node with the same quorum (`controller.quorum.voters`, `id@host:port` of every
node's controller) and the same cluster id; the node listens on, and advertises, its own host's address.
A node becomes ready only once a majority of the voters runs, so the hosts start their nodes together.
`<home>/cluster.json` records the cluster id, the voters and the node id the storage was formatted with.

With authentication (`auth`), every node logs in to the others as the same `admin`: copy the first host's
`<home>/credentials/` folder (0700, its files 0600) to every other host's home before that host's first
start; a host that finds none makes its own passwords, and its node is then refused by the others.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from core.errors import BadInput
from services.kafka.admin import quorum_leader
from services.kafka.cluster import ClusterStatus, EmbeddedCluster
from services.kafka.node import EmbeddedNode


def parse_voters(voters: str) -> dict[int, tuple[str, int]]:
    """`1@127.0.0.2:9093,2@127.0.0.3:9093` as {node id: (host, controller port)}; BadInput otherwise."""
    parsed: dict[int, tuple[str, int]] = {}
    for item in (v.strip() for v in voters.split(",") if v.strip()):
        try:
            node, address = item.split("@", 1)
            host, port = address.rsplit(":", 1)
            node_id, port_n = int(node), int(port)
        except ValueError:
            raise BadInput(f"bad voter {item!r}: write id@host:port, e.g. 1@127.0.0.2:9093") from None
        if node_id < 1 or node_id in parsed or not host or not 0 < port_n < 65536:
            raise BadInput(f"bad voter {item!r} in {voters!r}: ids from 1, each once, and a port")
        parsed[node_id] = (host, port_n)
    if not parsed:
        raise BadInput("no voters: give every node's controller as id@host:port,...")
    return parsed


def recorded_member(home: Path) -> tuple[int, str, str, int] | None:
    """(node id, voters, cluster id, client port) of the member node `home` was started as; None for a
    whole cluster (or nothing) there."""
    try:
        record = json.loads((home / "cluster.json").read_text())
        return int(record["node_id"]), str(record["voters"]), str(record["cluster_id"]), int(record["port"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


class MemberNode(EmbeddedCluster):
    """Node `node_id` of the cluster `voters` names, on `host`: clients on `port`, its controller on the
    port its own voter entry names. The others run on their own hosts with the same `cluster_id`."""

    def __init__(
        self,
        home: Path,
        jars_dir: Path,
        node_id: int,
        voters: str,
        cluster_id: str,
        *,
        port: int = 9092,
        heap: str = "512m",
        host: str | None = None,
        auth: bool = False,
    ) -> None:
        quorum = parse_voters(voters)
        if node_id not in quorum:
            raise BadInput(f"node {node_id} is not among the voters {voters}")
        own_host, controller_port = quorum[node_id]
        host = host or own_host
        if own_host != host:
            raise BadInput(f"node {node_id}'s voter entry names host {own_host}, but this node binds {host}")
        if controller_port == port:
            raise BadInput(f"node {node_id}: clients and its controller cannot share port {port}")
        if not cluster_id or cluster_id.startswith("-"):
            raise BadInput("a member node needs the cluster's id: btcflow broker cluster-id prints a new one")
        super().__init__(home, jars_dir, nodes=len(quorum), port=port, heap=heap, host=host, auth=auth)
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.quorum = quorum
        self.members = (EmbeddedNode.at(self.home, node_id, host, port, controller_port),)

    @property
    def voters(self) -> str:
        return ",".join(f"{i}@{h}:{p}" for i, (h, p) in sorted(self.quorum.items()))

    def node(self, node_id: int) -> EmbeddedNode:
        if node_id != self.node_id:
            raise BadInput(f"this host runs node {self.node_id}, not {node_id}")
        return self.members[0]

    def check_layout(self) -> None:
        """Refuse a home formatted for another cluster, node or quorum."""
        fix = "stop it (btcflow broker stop) and remove that folder, or set BTCFLOW_BROKER_DIR elsewhere"
        with contextlib.suppress(FileNotFoundError):
            record = json.loads(self._record.read_text())
            mine = {"cluster_id": self.cluster_id, "node_id": self.node_id, "voters": self.voters}
            theirs = {k: record.get(k) for k in mine}
            if theirs != mine:
                raise BadInput(f"{self.home} holds another Kafka node ({theirs}), not {mine}: {fix}")
        self._check_auth(fix)

    def _cluster_id(self) -> str:
        self.home.mkdir(parents=True, exist_ok=True)
        record = {
            "nodes": self.nodes,
            "cluster_id": self.cluster_id,
            "node_id": self.node_id,
            "voters": self.voters,
            "port": self.port,
            "auth": self.auth,
        }
        self._record.write_text(json.dumps(record) + "\n")
        return self.cluster_id

    def status(self) -> ClusterStatus:
        """This node and, while it runs, the active controller the quorum reports."""
        state = self.members[0].state()
        controller = quorum_leader(state.address, self.admin_credential()) if state.running else None
        return ClusterStatus(self.home, (state,), controller, size=self.nodes, auth=self.requires_auth)
