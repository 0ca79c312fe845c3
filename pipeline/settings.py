"""Ingest settings, read once by the entry point (environment, prefix BTCFLOW_) and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.credentials import Credential
from core.errors import BadInput
from core.storage import Storage, open_storage
from pipeline import defaults

if TYPE_CHECKING:
    from services.kafka.cluster import EmbeddedCluster

REPO_ROOT = Path(__file__).resolve().parents[1]


class PipelineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BTCFLOW_", extra="ignore")

    kafka_bootstrap: str | None = Field(
        None,
        description="Kafka bootstrap servers. Unset: the embedded cluster's nodes on 127.0.0.1. "
        "Set: btcflow uses that cluster and starts nothing.",
    )
    topic: str = Field(defaults.TOPIC, description="Topic the producer writes and the consumer reads.")
    partitions: int = Field(
        1, ge=1, description="Partitions for a topic btcflow creates; 1 keeps the file's order end to end."
    )
    consumer_group: str = Field(
        defaults.CONSUMER_GROUP,
        description="Consumer group of `btcflow consume`: its members on one --out write one dataset. "
        "Its committed offsets are informational: the manifest says where to resume, and a partition "
        "it does not list starts at the beginning.",
    )
    data_dir: Path = Field(Path("data"), description="Input CSV and batch/ output live here.")
    batch_uri: str | None = Field(
        None,
        description="Where the dataset lives (batch files, manifest.json, the _commits/ log): a local "
        "folder, or hdfs://host:port/path on HDFS (reached without a JVM). Unset: <data_dir>/batch.",
    )
    broker_nodes: int = Field(
        defaults.BROKER_NODES,
        ge=1,
        description="Nodes of the embedded cluster (each a broker and a KRaft controller voter); "
        "`btcflow broker start --nodes N` overrides it. With 3 or more, topics btcflow creates get "
        "3 replicas and min.insync.replicas=2, so losing one node loses no acknowledged row.",
    )
    broker_port: int = Field(
        defaults.BROKER_PORT,
        description="Client port of the embedded cluster's node 1; node i uses port + 2(i-1), "
        "its controller the port after its own.",
    )
    broker_host: str | None = Field(
        None,
        description="Address the embedded nodes bind and advertise to clients. Unset: "
        f"{defaults.BROKER_HOST} (this machine only), or with BTCFLOW_BROKER_VOTERS the host its node's "
        "voter entry names.",
    )
    broker_node_id: int | None = Field(
        None,
        ge=1,
        description="With BTCFLOW_BROKER_VOTERS: the one node of a cluster spread over hosts this host runs.",
    )
    broker_voters: str | None = Field(
        None,
        description="The KRaft quorum of a cluster spread over hosts, every node's controller as "
        "id@host:port,... (controller.quorum.voters). Set: `btcflow broker start` runs node "
        "BTCFLOW_BROKER_NODE_ID of it only, clients on BTCFLOW_BROKER_PORT, and the node count is theirs.",
    )
    broker_cluster_id: str | None = Field(
        None,
        description="The id every node of a cluster spread over hosts is formatted with, the same on every "
        "host (`btcflow broker cluster-id` prints a new one). Unset: a single-host cluster draws its own.",
    )
    broker_dir: Path | None = Field(
        None,
        description="Embedded cluster's home: cluster.json and one node-<i>/ folder per node (storage, "
        "server.properties, broker.log, broker.pid). Unset: <data_dir>/kafka.",
    )
    kafka_jars: Path = Field(
        REPO_ROOT / ".cache" / "kafka",
        description="Where `btcflow broker setup` puts the Kafka jars resolved by Maven.",
    )
    broker_heap: str = Field(
        defaults.BROKER_HEAP, description="JVM heap (-Xmx) of each node of the embedded cluster."
    )
    broker_auth: bool | None = Field(
        None,
        description="true: the embedded cluster requires authentication (SASL/SCRAM-SHA-512) and ACLs, from "
        "its first start (`btcflow broker start --auth` sets it): users admin, producer, consumer, monitor "
        "and gateway, their passwords kept in <broker home>/credentials/<user> (0600). Unset: as the "
        "cluster was first started, else off. It cannot change once the storage is formatted.",
    )
    kafka_username: str | None = Field(
        None,
        description="The Kafka user btcflow's clients log in as (SASL/SCRAM-SHA-512), with "
        "BTCFLOW_KAFKA_PASSWORD. Unset: on an embedded cluster that requires authentication, each command "
        "uses its role's kept credential (produce: producer, consume: consumer, monitor: monitor); "
        "otherwise no login.",
    )
    kafka_password: SecretStr | None = Field(
        None, description="The password of BTCFLOW_KAFKA_USERNAME (never shown)."
    )

    @property
    def embedded(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def bootstrap(self) -> str:
        """The external cluster, else every node of the embedded one (clients need only one to answer)."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        cluster = self.embedded_cluster()  # a member node: this host's node; the others are the other hosts'
        return cluster.bootstrap

    def kafka_credential(self, role: str) -> Credential | None:
        """Who a client of `role` (services.kafka.auth.ROLES, or admin) logs in as: BTCFLOW_KAFKA_USERNAME
        and its password when set, else the role's kept credential on an embedded cluster that requires
        authentication, else nobody (an open cluster)."""
        if self.kafka_username:
            if self.kafka_password is None:
                raise BadInput("BTCFLOW_KAFKA_USERNAME is set without BTCFLOW_KAFKA_PASSWORD")
            return Credential(self.kafka_username, self.kafka_password.get_secret_value())
        if not self.embedded:
            return None
        return self.embedded_cluster().credential(role)

    @property
    def batch_dir(self) -> Path:
        """The local default of the dataset's folder (when BTCFLOW_BATCH_URI is unset)."""
        return self.data_dir / "batch"

    @property
    def batch_location(self) -> str:
        return self.batch_uri or str(self.batch_dir)

    def batch_storage(self) -> Storage:
        return open_storage(self.batch_location)

    @property
    def broker_home(self) -> Path:
        return self.broker_dir or self.data_dir / "kafka"

    def embedded_cluster(self) -> EmbeddedCluster:
        """The embedded Kafka cluster these settings describe (its home, jars, nodes, port, heap, host);
        with BTCFLOW_BROKER_VOTERS, the one node of it this host runs."""
        from services.kafka.cluster import EmbeddedCluster
        from services.kafka.member import MemberNode, recorded_member

        node_id, voters, cluster_id = self.broker_node_id, self.broker_voters, self.broker_cluster_id
        port = self.broker_port
        if voters is None and (recorded := recorded_member(self.broker_home)) is not None:
            node_id, voters, cluster_id, port = recorded  # the node this home was started as (stop, status)
        if voters is None:
            cluster = EmbeddedCluster(
                self.broker_home,
                self.kafka_jars,
                self.broker_nodes,
                self.broker_port,
                self.broker_heap,
                self.broker_host or defaults.BROKER_HOST,
                auth=bool(self.broker_auth),
            )
            return self._with_auth(cluster)
        if node_id is None or cluster_id is None:
            raise BadInput(
                "a node of a cluster spread over hosts needs its node id and the cluster's id "
                "(--node-id and --cluster-id, or BTCFLOW_BROKER_NODE_ID and BTCFLOW_BROKER_CLUSTER_ID)"
            )
        member = MemberNode(
            self.broker_home,
            self.kafka_jars,
            node_id,
            voters,
            cluster_id,
            port=port,
            heap=self.broker_heap,
            host=self.broker_host,
            auth=bool(self.broker_auth),
        )
        return self._with_auth(member)

    def _with_auth(self, cluster: EmbeddedCluster) -> EmbeddedCluster:
        """Unless BTCFLOW_BROKER_AUTH says, a cluster keeps the authentication it was formatted with."""
        if self.broker_auth is None:
            cluster.auth = bool(cluster.formatted_auth())
        return cluster
