"""The HDFS cluster btcflow runs: a NameNode and N DataNodes on one host, or a DataNode joining a NameNode
that runs elsewhere (another host, another loopback address).

Every daemon is one JVM from the same jars (`services.hdfs.launcher`), known by its pid file in its folder
under `<home>` (`services.hdfs.node`). The NameNode's own view, its JMX over HTTP, is the truth about the
DataNodes: one counts as running once the NameNode lists it live. `<home>/cluster.json` records how many
DataNodes the last `start` asked for and the replication given, so a bare `start` brings back the same
cluster.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import BadInput
from services.hdfs.launcher import HDFS_MARKER, HdfsUnavailable, find_java, setup_jars
from services.hdfs.node import (
    CLIENT_CONFIG,
    DataNode,
    HdfsNode,
    NameNode,
    namenode_info,
    node_map,
    parse_address,
)
from services.processes import ServiceState, port_open, stop_pids


@dataclass(frozen=True)
class LiveDataNode:
    """A DataNode as the NameNode sees it."""

    name: str  # host:port it registered under (where clients write its blocks)
    uuid: str
    capacity: int  # bytes
    used: int  # bytes of HDFS blocks
    remaining: int  # bytes HDFS may still write
    last_contact_s: int  # since its last heartbeat

    @classmethod
    def of(cls, name: str, entry: dict[str, Any]) -> LiveDataNode:
        return cls(
            name,
            str(entry.get("uuid", "")),
            int(entry.get("capacity", 0)),
            int(entry.get("used", 0)),
            int(entry.get("remaining", 0)),
            int(entry.get("lastContact", 0)),
        )


@dataclass(frozen=True)
class HdfsStatus:
    home: Path
    address: str  # hdfs://host:port of the NameNode
    namenode: ServiceState | None  # None: this home holds only DataNodes of a NameNode elsewhere
    safemode: str  # the NameNode's own words while in safe mode (read-only), "" once out of it
    live: tuple[LiveDataNode, ...]  # every DataNode live on the NameNode, this home's or not
    dead: tuple[str, ...]  # host:port of those the NameNode declared dead
    datanodes: tuple[ServiceState, ...]  # this home's: running = its process runs and it is live
    answering: bool  # the NameNode answered

    @property
    def capacity(self) -> int:
        return sum(d.capacity for d in self.live)

    @property
    def remaining(self) -> int:
        return sum(d.remaining for d in self.live)

    @property
    def running(self) -> bool:
        """The NameNode answers out of safe mode, and every DataNode of this home is live on it."""
        return self.answering and not self.safemode and all(d.running for d in self.datanodes)

    def describe(self) -> str:
        if not self.answering:
            head = f"HDFS in {self.home}: the NameNode at {self.address} does not answer"
        else:
            mode = f", in safe mode: {self.safemode}" if self.safemode else ""
            head = (
                f"HDFS {self.address} ({self.home}): {len(self.live)} live DataNode(s), "
                f"{len(self.dead)} dead, capacity {_size(self.capacity)}, {_size(self.remaining)} free{mode}"
            )
        lines = [head]
        mine = [self.namenode] if self.namenode else []
        states = [*mine, *self.datanodes]
        if states:
            width = max(21, *(len(s.address) for s in states))
            lines += [s.line(width) for s in states]
        if self.live:
            lines.append("  live DataNodes (as the NameNode sees them):")
            lines += [
                f"    {d.name:<21} {_size(d.used)} used, {_size(d.remaining)} free of {_size(d.capacity)}, "
                f"last heartbeat {d.last_contact_s} s ago"
                for d in self.live
            ]
        lines += [f"    {name:<21} dead" for name in self.dead]
        return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} TB"


class HdfsCluster:
    """A NameNode on `host:port` (web, JMX, WebHDFS on `http_port`) and DataNodes `datanode-<i>` on `host`,
    each a JVM of `heap`, their files under `home`; or, through `join`, one DataNode of this home serving a
    NameNode elsewhere."""

    def __init__(
        self,
        home: Path,
        jars_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 9820,
        http_port: int = 9870,
        heap: str = "256m",
        replication: int | None = None,
    ) -> None:
        if replication is not None and replication < 1:
            raise BadInput(f"replication must be 1 or more, not {replication}")
        self.home = home.resolve()
        self.jars_dir = jars_dir
        self.host = host
        self.port = port
        self.http_port = http_port
        self.heap = heap
        self.replication = replication

    @property
    def address(self) -> str:
        return f"hdfs://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        """The NameNode's web UI (JMX at /jmx, WebHDFS at /webhdfs/v1)."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def client_config(self) -> dict[str, str]:
        """What a client of this cluster sets (hdfs_native.Client(address, config=...), or Spark's
        spark.hadoop.<key>): DataNodes by the address they bind, no replacement hunt on a failed write."""
        return dict(CLIENT_CONFIG)

    @property
    def namenode(self) -> NameNode:
        return NameNode.of(self.home, self.host, self.port, self.http_port)

    def datanode(self, i: int) -> DataNode:
        """DataNode `i` of this cluster, counting from 1 (`<home>/datanode-<i>/`)."""
        if i < 1:
            raise BadInput(f"DataNodes count from 1, not {i}")
        return self._datanode_in(self.home / f"datanode-{i}", self.address)

    def _datanode_in(self, folder: Path, namenode: str) -> DataNode:
        recorded = DataNode.recorded(folder)
        if recorded is not None and recorded.namenode == namenode and recorded.host == self.host:
            return recorded
        return DataNode.of(folder, namenode=namenode, namenode_http_port=self.http_port, host=self.host)

    def datanodes(self) -> list[DataNode]:
        """Every DataNode this home holds (the cluster's and those that joined from here), as recorded."""
        found = (DataNode.recorded(f) for f in sorted(self.home.glob("datanode-*")))
        return sorted((d for d in found if d is not None), key=lambda d: _order(d.name))

    @property
    def _record(self) -> Path:
        return self.home / "cluster.json"

    def _recorded(self) -> dict[str, Any]:
        try:
            record = json.loads(self._record.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def recorded_datanodes(self) -> int | None:
        """How many DataNodes the last start asked for; None before the first."""
        try:
            return int(self._recorded()["datanodes"])
        except (KeyError, TypeError, ValueError):
            return None

    def _given_replication(self) -> int | None:
        """Replicas of a block as given now, else at an earlier start (None: one per DataNode, at most 3)."""
        recorded = self._recorded().get("replication")
        return self.replication or (recorded if isinstance(recorded, int) and recorded > 0 else None)

    def start(self, datanodes: int | None = None, timeout_s: float = 120.0) -> str:
        """Start the NameNode and DataNodes 1..`datanodes` (default: as the last start, else 1; 0 runs the
        NameNode alone) where they do not run (idempotent: running ones are left alone, stopped or killed
        ones started again); return the hdfs:// address once every one is live and the NameNode is out of
        safe mode (with no DataNode, once it answers: its blocks wait for DataNodes to join)."""
        n = self.recorded_datanodes() if datanodes is None else datanodes
        n = 1 if n is None else n
        if n < 0:
            raise BadInput(f"a cluster runs 0 DataNodes or more, not {n}")
        namenode = self.namenode
        members = [self.datanode(i) for i in range(1, n + 1)]
        started: dict[HdfsNode, subprocess.Popen[bytes]] = {}
        if namenode.pid is None or any(d.pid is None for d in members):
            started = self._launch(namenode, members, n)
        members = [self.datanode(i) for i in range(1, n + 1)]  # with the ports they were started on
        try:
            self._wait(namenode, members, started, timeout_s, out_of_safemode=n > 0)
        except HdfsUnavailable:
            stop_pids([node.pid_file for node in started], 30.0, HDFS_MARKER, "HDFS")
            raise
        return self.address

    def _launch(
        self, namenode: NameNode, members: list[DataNode], n: int
    ) -> dict[HdfsNode, subprocess.Popen[bytes]]:
        if namenode.pid is None:
            for port in (self.port, self.http_port):
                if port_open(self.host, port):
                    raise HdfsUnavailable(f"port {port} on {self.host} is taken by another process")
        java = find_java()
        libs = setup_jars(self.jars_dir)
        self.home.mkdir(parents=True, exist_ok=True)
        given = self._given_replication()
        self._record.write_text(json.dumps({"datanodes": n, "replication": given}) + "\n")
        started: dict[HdfsNode, subprocess.Popen[bytes]] = {}
        if namenode.pid is None:
            namenode.configure(given or min(3, max(1, n)))
            namenode.format(java, libs, self.heap)
            started[namenode] = namenode.start_jvm(java, libs, self.heap)
        for d in members:
            if d.pid is None:
                d = d.with_free_ports()
                d.configure()
                started[d] = d.start_jvm(java, libs, self.heap)
        return started

    def _wait(
        self,
        namenode: NameNode,
        members: list[DataNode],
        started: dict[HdfsNode, subprocess.Popen[bytes]],
        timeout_s: float,
        out_of_safemode: bool,
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            for node, proc in started.items():
                if proc.poll() is not None:
                    raise node.failure("died at start")
            info = namenode.info()
            waiting = [d.name for d in members if d.live_in(info) is None]
            safemode = str(info.get("Safemode") or "") if info else ""
            if info is not None and not waiting and not (out_of_safemode and safemode):
                return
            if time.monotonic() > deadline:
                if info is None:
                    raise namenode.failure(f"did not answer at {namenode.http_url} within {timeout_s:.0f} s")
                if waiting:
                    raise HdfsUnavailable(
                        f"{', '.join(waiting)} not live on the NameNode within {timeout_s:.0f} s "
                        f"(log: {self.home / waiting[0] / 'datanode.log'})"
                    )
                raise HdfsUnavailable(
                    f"the NameNode is still in safe mode after {timeout_s:.0f} s: {safemode}"
                )
            time.sleep(0.3)

    def join(self, namenode: str, timeout_s: float = 60.0) -> DataNode:
        """Start a DataNode of this home, bound to `host`, serving the NameNode at `namenode`
        (hdfs://host:port, its web port this cluster's `http_port`), unless it runs; return it once the
        NameNode lists it live. Its folder is `<home>/datanode-<host>/`."""
        nn_host, nn_port = parse_address(namenode)
        node = self._datanode_in(self.home / f"datanode-{self.host}", namenode)
        if not port_open(nn_host, nn_port):
            raise HdfsUnavailable(f"no NameNode answers at {namenode}")
        started: dict[HdfsNode, subprocess.Popen[bytes]] = {}
        if node.pid is None:
            java = find_java()
            libs = setup_jars(self.jars_dir)
            node = node.with_free_ports()
            node.configure()
            started[node] = node.start_jvm(java, libs, self.heap)
        deadline = time.monotonic() + timeout_s
        while not node.answers():
            proc = started.get(node)
            if proc is not None and proc.poll() is not None:
                raise node.failure("died at start")
            if time.monotonic() > deadline:
                stop_pids([n.pid_file for n in started], 30.0, HDFS_MARKER, "HDFS")
                raise HdfsUnavailable(
                    f"{node.name} not live on the NameNode {namenode} within {timeout_s:.0f} s "
                    f"(log: {node.log_file})"
                )
            time.sleep(0.3)
        return node

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop every daemon this home holds, all at once (SIGTERM, SIGKILL after `timeout_s`).
        False if none was running."""
        pid_files = [self.namenode.pid_file, *sorted(self.home.glob("datanode-*/datanode.pid"))]
        return stop_pids(pid_files, timeout_s, HDFS_MARKER, "HDFS")

    def status(self) -> HdfsStatus:
        """The NameNode's view (safe mode, live and dead DataNodes, capacity) and this home's daemons."""
        datanodes = self.datanodes()
        namenode = self.namenode if (self.home / "namenode").is_dir() or not datanodes else None
        if namenode is not None:
            address, info = self.address, namenode.info()
        else:  # a home of DataNodes that joined a NameNode elsewhere: ask that one
            address, info = datanodes[0].namenode, namenode_info(datanodes[0].namenode_http_url)
        live = tuple(LiveDataNode.of(k, v) for k, v in sorted(node_map(info, "LiveNodes").items()))
        states = tuple(
            ServiceState(d.name, d.address, pid := d.pid, pid is not None and d.live_in(info) is not None)
            for d in datanodes
        )
        nn_state = None
        if namenode is not None:
            pid = namenode.pid
            up = pid is not None and info is not None
            nn_state = ServiceState(namenode.name, namenode.address, pid, up)
        return HdfsStatus(
            home=self.home,
            address=address,
            namenode=nn_state,
            safemode=str(info.get("Safemode") or "") if info else "",
            live=live,
            dead=tuple(sorted(node_map(info, "DeadNodes"))),
            datanodes=states,
            answering=info is not None,
        )


def _order(name: str) -> tuple[int, str]:
    """datanode-2 before datanode-10, numbered ones before those named by host."""
    suffix = name.removeprefix("datanode-")
    return (int(suffix), "") if suffix.isdigit() else (1 << 30, suffix)
