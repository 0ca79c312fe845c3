"""The HDFS cluster btcflow runs: real NameNode and DataNode JVMs, through the CLI and the Python API.

One session cluster (tests/hdfs_cluster.py: a NameNode, 2 DataNodes) serves most tests; a test that kills
a daemon brings it back before it ends. The multi-host test runs a NameNode and a DataNode of its own on
loopback addresses of their own, as hosts that share no disk would.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import hdfs_native
import pytest

from services.hdfs.cluster import HdfsCluster
from services.hdfs.node import DEAD_AFTER_S
from services.processes import free_port
from tests.hdfs_cluster import hdfs_cluster_on_free_ports, hdfs_env
from tests.waiting import wait_until

BTCFLOW = [sys.executable, "-m", "btcflow.cli"]


def btcflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BTCFLOW, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("btcflow: error: "), done.stderr
    return lines[0]


def client(cluster: HdfsCluster) -> hdfs_native.Client:
    return hdfs_native.Client(cluster.address, config=cluster.client_config)


def write(fs: hdfs_native.Client, path: str, data: bytes) -> None:
    with fs.create(path, hdfs_native.WriteOptions(create_parent=True)) as f:
        f.write(data)


def read(fs: hdfs_native.Client, path: str) -> bytes:
    with fs.read(path) as f:
        return bytes(f.readall())


def test_start_is_idempotent_and_prints_the_address(hdfs_cluster: HdfsCluster) -> None:
    pids = [hdfs_cluster.namenode.pid, hdfs_cluster.datanode(1).pid, hdfs_cluster.datanode(2).pid]
    done = btcflow(hdfs_env(hdfs_cluster), "hdfs", "start")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == hdfs_cluster.address
    assert [hdfs_cluster.namenode.pid, hdfs_cluster.datanode(1).pid, hdfs_cluster.datanode(2).pid] == pids
    assert not (hdfs_cluster.home / "datanode-3").exists()  # a bare start keeps the last start's count


def test_status_lists_live_datanodes_and_capacity(hdfs_cluster: HdfsCluster) -> None:
    state = hdfs_cluster.status()
    assert state.running and not state.safemode
    assert {d.name for d in state.live} == {hdfs_cluster.datanode(i).address for i in (1, 2)}
    assert state.capacity > state.remaining > 0
    done = btcflow(hdfs_env(hdfs_cluster), "hdfs", "status")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 live DataNode(s), 0 dead" in done.stdout
    assert "datanode-1" in done.stdout and "datanode-2" in done.stdout


def test_write_and_read_through_hdfs_native(hdfs_cluster: HdfsCluster) -> None:
    fs, folder = client(hdfs_cluster), f"/test/{uuid.uuid4().hex}"
    data = bytes(range(256)) * 4096  # 1 MiB
    write(fs, f"{folder}/a.bin", data)
    assert read(fs, f"{folder}/a.bin") == data
    assert fs.get_file_info(f"{folder}/a.bin").replication == 2  # min(3, DataNodes)
    with pytest.raises(FileExistsError):
        fs.create(f"{folder}/a.bin")
    assert fs.rename(f"{folder}/a.bin", f"{folder}/b.bin", overwrite=False) is None
    assert [s.path.rsplit("/", 1)[-1] for s in fs.list_status(folder)] == ["b.bin"]
    fs.delete(folder, recursive=True)
    with pytest.raises(FileNotFoundError):
        fs.get_file_info(folder)


def test_a_killed_datanode_is_seen_dead_and_restarted(hdfs_cluster: HdfsCluster) -> None:
    fs, path = client(hdfs_cluster), f"/test/{uuid.uuid4().hex}"
    write(fs, path, b"kept on both DataNodes")
    killed = hdfs_cluster.datanode(2)
    pid = killed.pid
    try:
        assert killed.kill()
        assert [d.running for d in hdfs_cluster.status().datanodes] == [True, False]
        assert btcflow(hdfs_env(hdfs_cluster), "hdfs", "status").returncode == 3
        assert read(fs, path) == b"kept on both DataNodes"  # from the replica on the other
        wait_until(lambda: killed.address in hdfs_cluster.status().dead, DEAD_AFTER_S + 15, "declared dead")
    finally:
        started = time.monotonic()
        hdfs_cluster.start(timeout_s=120)
        print(f"DataNode restarted in {time.monotonic() - started:.1f} s")
    state = hdfs_cluster.status()
    assert state.running and len(state.live) == 2 and not state.dead
    assert hdfs_cluster.datanode(2).pid not in (None, pid)


def test_a_killed_namenode_is_restarted_with_its_files(hdfs_cluster: HdfsCluster) -> None:
    fs, path = client(hdfs_cluster), f"/test/{uuid.uuid4().hex}"
    write(fs, path, b"survives the NameNode")
    datanodes = [hdfs_cluster.datanode(i).pid for i in (1, 2)]
    try:
        assert hdfs_cluster.namenode.kill()
        assert not hdfs_cluster.status().answering
    finally:
        hdfs_cluster.start(timeout_s=120)  # out of safe mode: the DataNodes reported the file's block
    assert read(client(hdfs_cluster), path) == b"survives the NameNode"
    assert [hdfs_cluster.datanode(i).pid for i in (1, 2)] == datanodes  # left alone


def test_a_taken_port_is_one_line_and_exit_3(hdfs_cluster: HdfsCluster, tmp_path: Path) -> None:
    env = hdfs_env(hdfs_cluster) | {"BTCFLOW_DATA_DIR": str(tmp_path)}  # another home, the same ports
    done = btcflow(env, "hdfs", "start")
    assert done.returncode == 3
    assert (
        one_error_line(done)
        == f"btcflow: error: port {hdfs_cluster.port} on 127.0.0.1 is taken by another process"
    )
    assert not list(tmp_path.glob("hdfs/*/*.pid"))


def test_joining_an_unreachable_namenode_is_one_line_and_exit_3(tmp_path: Path) -> None:
    env = {"BTCFLOW_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = btcflow(env, "hdfs", "join", f"hdfs://127.0.0.1:{free_port()}")
    assert done.returncode == 3
    assert "no NameNode answers at hdfs://127.0.0.1:" in one_error_line(done)
    done = btcflow(env, "hdfs", "join", "127.0.0.1:9820")
    assert done.returncode == 2
    assert "use hdfs://host:port" in one_error_line(done)


def test_a_datanode_joins_a_namenode_on_another_host(tmp_path: Path) -> None:
    """NameNode on 127.0.0.2, a DataNode on 127.0.0.3 with a home of its own: each as on its own machine.
    The NameNode sees the DataNode connect from 127.0.0.1, so clients need `client_config` to reach it."""
    namenode = hdfs_cluster_on_free_ports(tmp_path / "nn", host="127.0.0.2")
    nn_env = hdfs_env(namenode)
    dn_env = nn_env | {"BTCFLOW_DATA_DIR": str(tmp_path / "dn"), "BTCFLOW_HDFS_HOST": "127.0.0.3"}
    try:
        done = btcflow(nn_env, "hdfs", "start", "--datanodes", "0")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"hdfs://127.0.0.2:{namenode.port}"
        done = btcflow(dn_env, "hdfs", "join", namenode.address)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().startswith("127.0.0.3:")
        assert (tmp_path / "dn" / "hdfs" / "datanode-127.0.0.3" / "data" / "current").is_dir()

        done = btcflow(dn_env, "hdfs", "status")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 live DataNode(s)" in done.stdout and "datanode-127.0.0.3" in done.stdout

        fs = client(namenode)
        write(fs, "/joined", b"on 127.0.0.3")
        assert read(fs, "/joined") == b"on 127.0.0.3"
    finally:
        assert btcflow(dn_env, "hdfs", "stop").stdout.strip() in ("HDFS stopped", "HDFS was not running")
        done = btcflow(nn_env, "hdfs", "stop")
    assert done.stdout.strip() == "HDFS stopped"
    assert btcflow(nn_env, "hdfs", "status").returncode == 3
    assert not list(tmp_path.glob("*/hdfs/*/*.pid"))
