"""The two kinds of HDFS daemon btcflow runs, each one JVM managed through the pid file in its own folder
beside its storage, its `conf/` (core-site.xml, hdfs-site.xml, written at every start) and its log.

`<home>/namenode/` holds the NameNode (`name/` is the namespace, formatted once); `<home>/datanode-<i>/`
a DataNode of the cluster, `<home>/datanode-<host>/` one that joined from its own host, each with `data/`
(its blocks) and `datanode.json` (the NameNode it serves, the host and the ports it binds). A DataNode
takes ports free at its start, so N of them share one host.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.errors import BadInput
from services.hdfs.launcher import (
    DATANODE_CLASS,
    NAMENODE_CLASS,
    HdfsUnavailable,
    jvm_command,
    site_xml,
)
from services.processes import Supervised, free_port, port_open

# A DataNode heartbeats every second; the NameNode declares one dead after 2 x recheck + 10 heartbeats
# (15 s, Hadoop's default is 10.5 min) and copies its blocks elsewhere.
HEARTBEAT_S = 1
RECHECK_MS = 2500
DEAD_AFTER_S = 2 * RECHECK_MS / 1000 + 10 * HEARTBEAT_S

# What every client of a btcflow HDFS needs (hdfs-native's Client(url, config=...), Spark's spark.hadoop.*):
# DataNodes by the host name they bind (on several loopback addresses the NameNode sees them all as
# 127.0.0.1), and no search for a replacement DataNode when one of a write's pipeline fails (a cluster of
# 1-3 DataNodes has none to spare: the write goes on with those left).
CLIENT_CONFIG = {
    "dfs.client.use.datanode.hostname": "true",
    "dfs.client.block.write.replace-datanode-on-failure.policy": "NEVER",
}


def parse_address(address: str) -> tuple[str, int]:
    """(host, port) of an hdfs://host:port address; BadInput otherwise."""
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "hdfs" or not parts.hostname or port is None or parts.path.strip("/"):
        raise BadInput(f"bad NameNode address {address!r}: use hdfs://host:port")
    return parts.hostname, port


def namenode_info(http_url: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """The NameNode's own view (its NameNodeInfo JMX bean: safe mode, live and dead DataNodes, capacity),
    or None when it does not answer."""
    import httpx

    try:
        response = httpx.get(
            f"{http_url}/jmx", params={"qry": "Hadoop:service=NameNode,name=NameNodeInfo"}, timeout=timeout_s
        )
        beans = response.json()["beans"] if response.status_code == 200 else []
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return dict(beans[0]) if beans else None


def node_map(info: dict[str, Any] | None, key: str) -> dict[str, dict[str, Any]]:
    """LiveNodes or DeadNodes of a NameNodeInfo bean (JSON text in the bean), by host:port."""
    if not info:
        return {}
    try:
        nodes = json.loads(info.get(key) or "{}")
    except ValueError:
        return {}
    return nodes if isinstance(nodes, dict) else {}


@dataclass(frozen=True, kw_only=True)
class HdfsNode(Supervised):
    """One HDFS daemon: its folder, its main class, and how to start it."""

    dir: Path
    main_class: str

    @property
    def conf_dir(self) -> Path:
        return self.dir / "conf"

    def write_config(self, core: dict[str, str], hdfs: dict[str, str]) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "core-site.xml").write_text(site_xml(core))
        (self.conf_dir / "hdfs-site.xml").write_text(site_xml(hdfs))

    def start_jvm(self, java: str, libs: Path, heap: str) -> subprocess.Popen[bytes]:
        return self.launch(jvm_command(java, self.conf_dir, libs, heap, self.main_class), cwd=self.dir)

    def failure(self, what: str) -> HdfsUnavailable:
        return HdfsUnavailable(f"HDFS {self.name} {what}: {self.last_error()} (log: {self.log_file})")


@dataclass(frozen=True, kw_only=True)
class NameNode(HdfsNode):
    """The NameNode: the namespace and the block map; RPC on `port`, web UI, JMX, WebHDFS on `http_port`."""

    http_port: int

    @classmethod
    def of(cls, home: Path, host: str, port: int, http_port: int) -> NameNode:
        folder = home / "namenode"
        return cls(
            name="namenode",
            address=f"hdfs://{host}:{port}",
            host=host,
            port=port,
            pid_file=folder / "namenode.pid",
            log_file=folder / "namenode.log",
            marker=NAMENODE_CLASS.encode(),
            dir=folder,
            main_class=NAMENODE_CLASS,
            http_port=http_port,
        )

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def info(self) -> dict[str, Any] | None:
        """Its own view (`namenode_info`) once it serves clients; None before (its web server and JMX
        answer a second or more before its RPC port opens)."""
        return namenode_info(self.http_url) if port_open(self.host, self.port) else None

    def answers(self) -> bool:
        return self.info() is not None

    @property
    def formatted(self) -> bool:
        return (self.dir / "name" / "current" / "VERSION").is_file()

    def configure(self, replication: int) -> None:
        self.write_config(
            core_site(self.address, self.dir),
            {
                "dfs.namenode.name.dir": (self.dir / "name").as_uri(),
                "dfs.namenode.rpc-address": f"{self.host}:{self.port}",
                "dfs.namenode.http-address": f"{self.host}:{self.http_port}",
                "dfs.replication": str(replication),
                "dfs.permissions.enabled": "false",
                "dfs.heartbeat.interval": str(HEARTBEAT_S),
                "dfs.namenode.heartbeat.recheck-interval": str(RECHECK_MS),
                # leave safe mode as soon as the DataNodes have reported the blocks, not 30 s after
                "dfs.namenode.safemode.extension": "0",
                # DataNodes on several loopback addresses all connect from 127.0.0.1: no reverse-DNS check
                "dfs.namenode.datanode.registration.ip-hostname-check": "false",
                # with 1-3 DataNodes on one machine, a busy one must still get blocks
                "dfs.namenode.redundancy.considerLoad": "false",
            },
        )

    def format(self, java: str, libs: Path, heap: str) -> None:
        """Format the namespace (an empty file system), unless it is formatted already."""
        if self.formatted:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = jvm_command(java, self.conf_dir, libs, heap, self.main_class, "-format", "-nonInteractive")
        with (self.dir / "format.log").open("wb") as out:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir, check=False)
        if done.returncode != 0 or not self.formatted:
            raise HdfsUnavailable(
                f"formatting the NameNode failed (exit {done.returncode}): see {self.dir / 'format.log'}"
            )


@dataclass(frozen=True, kw_only=True)
class DataNode(HdfsNode):
    """A DataNode bound to `host` serving the NameNode at `namenode` (hdfs://host:port), whose web port
    `namenode_http_port` tells whether this DataNode is live. Its ports are drawn free at each start and
    recorded (0 before the first): a restarted DataNode registers under a new transfer port, so the
    NameNode's view tells it apart from the registration of the process before it."""

    namenode: str
    namenode_http_port: int
    http_port: int = 0
    ipc_port: int = 0

    @classmethod
    def of(
        cls,
        folder: Path,
        *,
        namenode: str,
        namenode_http_port: int,
        host: str,
        ports: tuple[int, int, int] = (0, 0, 0),
    ) -> DataNode:
        """`ports`: data transfer, web (HTTP, JMX), IPC."""
        parse_address(namenode)
        xfer, http, ipc = ports
        return cls(
            name=folder.name,
            address=f"{host}:{xfer}" if xfer else host,
            host=host,
            port=xfer,
            pid_file=folder / "datanode.pid",
            log_file=folder / "datanode.log",
            marker=DATANODE_CLASS.encode(),
            dir=folder,
            main_class=DATANODE_CLASS,
            namenode=namenode,
            namenode_http_port=namenode_http_port,
            http_port=http,
            ipc_port=ipc,
        )

    @classmethod
    def recorded(cls, folder: Path) -> DataNode | None:
        """The DataNode a folder holds as its last start recorded it (None without a record)."""
        try:
            record = json.loads((folder / "datanode.json").read_text())
            return cls.of(
                folder,
                namenode=str(record["namenode"]),
                namenode_http_port=int(record["namenode_http_port"]),
                host=str(record["host"]),
                ports=(int(record["port"]), int(record["http_port"]), int(record["ipc_port"])),
            )
        except (FileNotFoundError, ValueError, KeyError, TypeError, BadInput):
            return None

    def with_free_ports(self) -> DataNode:
        """The same DataNode on three ports free on its host now (drawn at each start)."""
        ports = (free_port(self.host), free_port(self.host), free_port(self.host))
        return DataNode.of(
            self.dir,
            namenode=self.namenode,
            namenode_http_port=self.namenode_http_port,
            host=self.host,
            ports=ports,
        )

    @property
    def namenode_http_url(self) -> str:
        return f"http://{parse_address(self.namenode)[0]}:{self.namenode_http_port}"

    @property
    def uuid(self) -> str | None:
        """The id the NameNode knows this DataNode by, written into its storage at its first registration."""
        try:
            text = (self.dir / "data" / "current" / "VERSION").read_text()
        except FileNotFoundError:
            return None
        prefix = "datanodeUuid="
        return next((ln[len(prefix) :].strip() for ln in text.splitlines() if ln.startswith(prefix)), None)

    def live_in(self, info: dict[str, Any] | None) -> dict[str, Any] | None:
        """This DataNode's entry among the NameNode's live ones, registered by this very process (its
        transfer port); None: not live, or not registered yet."""
        uuid = self.uuid
        if uuid is None or not self.port:
            return None
        return next(
            (
                n
                for n in node_map(info, "LiveNodes").values()
                if n.get("uuid") == uuid and str(n.get("xferaddr", "")).endswith(f":{self.port}")
            ),
            None,
        )

    def answers(self) -> bool:
        """Live on its NameNode: registered, and heartbeating."""
        return self.live_in(namenode_info(self.namenode_http_url)) is not None

    def check_record(self) -> None:
        """Refuse a folder holding a DataNode of another NameNode (its blocks belong to that file system)."""
        before = DataNode.recorded(self.dir)
        if before is not None and self.uuid is not None and before.namenode != self.namenode:
            raise BadInput(
                f"{self.dir} holds a DataNode of {before.namenode}, not {self.namenode}: remove that folder "
                "to join another file system"
            )

    def configure(self) -> None:
        self.check_record()
        self.write_config(
            core_site(self.namenode, self.dir),
            {
                "dfs.datanode.data.dir": (self.dir / "data").as_uri(),
                "dfs.datanode.address": f"{self.host}:{self.port}",
                "dfs.datanode.http.address": f"{self.host}:{self.http_port}",
                "dfs.datanode.ipc.address": f"{self.host}:{self.ipc_port}",
                # registered under the address it binds: clients and other DataNodes reach it there
                "dfs.datanode.hostname": self.host,
                "dfs.datanode.use.datanode.hostname": "true",
                "dfs.heartbeat.interval": str(HEARTBEAT_S),
            },
        )
        record = {
            "namenode": self.namenode,
            "namenode_http_port": self.namenode_http_port,
            "host": self.host,
            "port": self.port,
            "http_port": self.http_port,
            "ipc_port": self.ipc_port,
        }
        (self.dir / "datanode.json").write_text(json.dumps(record) + "\n")


def core_site(namenode: str, folder: Path) -> dict[str, str]:
    return {
        "fs.defaultFS": namenode,
        "hadoop.tmp.dir": str(folder / "tmp"),  # not /tmp/hadoop-<user>, shared by every daemon
        **CLIENT_CONFIG,
    }
