"""Each service binds the host it is given: what it writes into its configuration and command line, and what
it refuses, without starting anything (tests/test_shared_nothing.py starts them all on hosts of their own)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import BadInput
from pipeline.settings import PipelineSettings
from services.kafka.cluster import EmbeddedCluster
from services.kafka.member import MemberNode, parse_voters, recorded_member
from services.mlflow_server import TrackingServer
from services.postgres import PostgresCluster
from services.spark.cluster import MASTER, WORKER, SparkCluster
from services.spark.settings import SparkSettings

VOTERS = "1@127.0.0.2:9093,2@127.0.0.3:9093,3@127.0.0.4:9093"


def test_voters_parse_and_bad_ones_are_refused_in_one_line() -> None:
    assert parse_voters(VOTERS) == {1: ("127.0.0.2", 9093), 2: ("127.0.0.3", 9093), 3: ("127.0.0.4", 9093)}
    for bad in ("", "1@127.0.0.2", "x@h:1", "1@h:1,1@g:2", "0@h:1", "1@:9093", "1@h:70000"):
        with pytest.raises(BadInput):
            parse_voters(bad)


def test_a_single_host_cluster_binds_and_advertises_its_host(tmp_path: Path) -> None:
    cluster = EmbeddedCluster(tmp_path, tmp_path, nodes=2, port=19092, host="127.0.0.7")
    assert cluster.bootstrap == "127.0.0.7:19092,127.0.0.7:19094"
    assert cluster.voters == "1@127.0.0.7:19093,2@127.0.0.7:19095"
    node = cluster.node(2)
    node.write_config(cluster.voters, cluster.replication_factor)
    config = node.config_file.read_text()
    assert "listeners=PLAINTEXT://127.0.0.7:19094,CONTROLLER://127.0.0.7:19095\n" in config
    assert "advertised.listeners=PLAINTEXT://127.0.0.7:19094\n" in config


def test_a_member_node_runs_its_own_node_of_the_quorum_on_its_voter_entry_host(tmp_path: Path) -> None:
    member = MemberNode(tmp_path, tmp_path, 2, VOTERS, "AAAAAAAAAAAAAAAAAAAAAA", port=9092)
    (node,) = member.members
    assert (node.node_id, node.host, node.port, node.controller_port) == (2, "127.0.0.3", 9092, 9093)
    assert member.bootstrap == "127.0.0.3:9092"
    assert member.replication_factor == 3 and member.voters == VOTERS
    node.write_config(member.voters, member.replication_factor)
    config = node.config_file.read_text()
    assert f"controller.quorum.voters={VOTERS}\n" in config
    assert "advertised.listeners=PLAINTEXT://127.0.0.3:9092\n" in config
    assert member._cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"
    assert recorded_member(tmp_path) == (2, VOTERS, "AAAAAAAAAAAAAAAAAAAAAA", 9092)


@pytest.mark.parametrize(
    ("node_id", "host", "port", "cluster_id", "says"),
    [
        (4, None, 9092, "AAAAAAAAAAAAAAAAAAAAAA", "not among the voters"),
        (2, "127.0.0.9", 9092, "AAAAAAAAAAAAAAAAAAAAAA", "names host 127.0.0.3"),
        (2, None, 9093, "AAAAAAAAAAAAAAAAAAAAAA", "cannot share port 9093"),
        (2, None, 9092, "", "cluster's id"),
    ],
)
def test_a_member_node_refuses_what_does_not_fit_its_quorum(
    tmp_path: Path, node_id: int, host: str | None, port: int, cluster_id: str, says: str
) -> None:
    with pytest.raises(BadInput, match=says):
        MemberNode(tmp_path, tmp_path, node_id, VOTERS, cluster_id, port=port, host=host)


def test_a_member_home_refuses_another_cluster(tmp_path: Path) -> None:
    MemberNode(tmp_path, tmp_path, 1, VOTERS, "AAAAAAAAAAAAAAAAAAAAAA")._cluster_id()
    with pytest.raises(BadInput, match="holds another Kafka node"):
        MemberNode(tmp_path, tmp_path, 1, VOTERS, "BBBBBBBBBBBBBBBBBBBBBB").check_layout()


def test_settings_give_the_member_node_and_later_commands_find_it_recorded(tmp_path: Path) -> None:
    given = PipelineSettings(
        data_dir=tmp_path, broker_node_id=3, broker_voters=VOTERS, broker_cluster_id="AAAAAAAAAAAAAAAAAAAAAA"
    )
    member = given.embedded_cluster()
    assert isinstance(member, MemberNode) and given.bootstrap == "127.0.0.4:9092"
    member._cluster_id()
    later = PipelineSettings(data_dir=tmp_path).embedded_cluster()  # `broker status` with no option
    assert isinstance(later, MemberNode) and later.members[0].address == "127.0.0.4:9092"
    with pytest.raises(BadInput, match="node id and the cluster's id"):
        PipelineSettings(data_dir=tmp_path / "other", broker_voters=VOTERS).embedded_cluster()
    assert PipelineSettings(data_dir=tmp_path / "plain").bootstrap == "127.0.0.1:9092"  # the default holds


def test_spark_daemons_bind_their_host_and_workers_join_a_master_elsewhere(tmp_path: Path) -> None:
    master = SparkCluster(tmp_path / "m", "file:///events", workers=0, host="127.0.0.30", port=7077)
    assert [d.name for d in master.daemons()] == ["master", "history"]
    assert master.master().args[:2] == ("--host", "127.0.0.30") and master.master().main_class == MASTER
    assert master.master_url == "spark://127.0.0.30:7077"
    worker = SparkCluster(tmp_path / "w", "file:///events", host="127.0.0.31", join="spark://127.0.0.30:7077")
    (daemon,) = worker.daemons()
    assert daemon.main_class == WORKER and daemon.args[:3] == (
        "spark://127.0.0.30:7077",
        "--host",
        "127.0.0.31",
    )
    assert daemon.address.startswith("http://127.0.0.31:") and worker.master_url == "spark://127.0.0.30:7077"
    assert worker._env()["SPARK_LOCAL_IP"] == "127.0.0.31"  # the executors a worker starts bind there too
    with pytest.raises(BadInput):
        SparkCluster(tmp_path, "file:///events", workers=0, join="spark://127.0.0.30:7077")
    with pytest.raises(BadInput, match="spark://host:port"):
        SparkCluster(tmp_path, "file:///events", join="127.0.0.30:7077")


def test_spark_status_follows_the_last_start(tmp_path: Path) -> None:
    settings = SparkSettings(data_dir=tmp_path)
    home = settings.home
    home.mkdir(parents=True)
    (home / "cluster.json").write_text(
        json.dumps({"workers": 1, "host": "127.0.0.31", "join": "spark://127.0.0.30:7077"})
    )
    (daemon,) = SparkCluster.from_settings(settings).status().daemons  # no option: as started
    assert daemon.name == "worker-1" and daemon.address.startswith("http://127.0.0.31:")


def test_the_tracking_server_and_its_postgres_bind_their_hosts(tmp_path: Path) -> None:
    server = TrackingServer(tmp_path, port=5000, host="127.0.0.40", postgres_host="127.0.0.41")
    command = server._command()
    assert command[command.index("--host") + 1] == "127.0.0.40" and server.uri == "http://127.0.0.40:5000"
    allowed = command[command.index("--allowed-hosts") + 1].split(",")
    assert {"127.0.0.40", "127.0.0.40:*", "localhost", "127.0.0.1:*"} <= set(allowed)
    assert server.postgres is not None and server.postgres.process.address == "127.0.0.41:5433"
    assert "--allowed-hosts" not in TrackingServer(tmp_path)._command()  # on 127.0.0.1, MLflow's defaults
    postgres = PostgresCluster(tmp_path / "pg", 5433, tmp_path, host="127.0.0.41")
    assert "@127.0.0.41:5433/mlflow" in postgres.uri
