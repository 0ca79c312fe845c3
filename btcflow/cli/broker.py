"""`btcflow broker setup|start|stop|status|grant`: the embedded KRaft cluster (one node by default)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from btcflow.cli.groups import group
from pipeline import defaults

if TYPE_CHECKING:
    from pipeline.settings import PipelineSettings
    from services.kafka.auth import Names
    from services.kafka.cluster import EmbeddedCluster

broker_app = group(
    help="The embedded Apache Kafka cluster (KRaft, each node a broker and a controller) on 127.0.0.1 "
    "(BTCFLOW_BROKER_HOST), or one node of a cluster spread over hosts (--voters).",
)


def _external(settings: PipelineSettings) -> str:
    return (
        f"BTCFLOW_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: btcflow uses that cluster and manages no broker"
    )


def role_names(settings: PipelineSettings, monitor_topics: tuple[str, ...] = ()) -> Names:
    """The names the roles work on: these settings' topic and group, the monitor's and gateway's."""
    from monitoring.settings import MonitorSettings
    from services.kafka.auth import PREDICTION_TOPIC, Names
    from serving.settings import ServingSettings

    return Names(
        topic=settings.topic,
        consumer_group=settings.consumer_group,
        monitor_group=MonitorSettings().group,
        prediction_topic=ServingSettings().prediction_topic or PREDICTION_TOPIC,
        monitor_topics=monitor_topics,
    )


def _grant(settings: PipelineSettings, cluster: EmbeddedCluster, extra_topics: list[str]) -> str:
    """Give the roles their ACLs on the names these settings (and the monitor's and gateway's) use."""
    names = role_names(settings, tuple(extra_topics))
    count = cluster.grant(names)
    return (
        f"{count} ACLs for producer, consumer, monitor and gateway on {names.topic}, {names.dlq}, "
        f"{names.prediction_topic}, groups {names.consumer_group} and {names.monitor_group}; credentials in "
        f"{cluster.home / 'credentials'}/"
    )


@broker_app.command("setup")
def setup() -> None:
    """Resolve the Kafka jars with Maven into the cache (once; again only when the pom changes)."""
    from pipeline.settings import PipelineSettings
    from services.kafka.launcher import setup_jars

    settings = PipelineSettings()
    libs = setup_jars(settings.kafka_jars)
    typer.echo(f"Kafka jars ready in {libs}")


@broker_app.command(
    "start",
    help="Start the embedded cluster (idempotent) and print its bootstrap list once every node answers.\n\n"
    "Nodes already running are left alone; the others (a stopped or killed one) are started. "
    f"Each node is one JVM with a heap of BTCFLOW_BROKER_HEAP ({defaults.BROKER_HEAP} per node by default); "
    "node i listens on BTCFLOW_BROKER_PORT + 2(i-1), its controller on the next port, and keeps its "
    "files in <BTCFLOW_DATA_DIR>/kafka/node-<i>/.\n\n"
    "With --voters (a cluster spread over hosts that share nothing), starts only node --node-id of it, "
    "on --host, and waits until a majority of the voters runs: start every host's node together.\n\n"
    "With BTCFLOW_KAFKA_BOOTSTRAP set, starts nothing and prints that address.",
)
def start(
    nodes: int | None = typer.Option(
        None,
        "--nodes",
        min=1,
        help=f"Nodes of the cluster. Default: BTCFLOW_BROKER_NODES, else {defaults.BROKER_NODES}.",
        show_default=False,
    ),
    host: str | None = typer.Option(
        None,
        "--host",
        help="Address the nodes bind and advertise. Default: BTCFLOW_BROKER_HOST, else "
        f"{defaults.BROKER_HOST} (with --voters: the host of this node's voter entry).",
        show_default=False,
    ),
    port: int | None = typer.Option(
        None,
        "--port",
        min=1,
        max=65535,
        help=f"Client port of node 1 (of this node with --voters). Default: BTCFLOW_BROKER_PORT, else "
        f"{defaults.BROKER_PORT}.",
        show_default=False,
    ),
    node_id: int | None = typer.Option(
        None,
        "--node-id",
        min=1,
        help="With --voters: the node this host runs. Default: BTCFLOW_BROKER_NODE_ID.",
        show_default=False,
    ),
    voters: str | None = typer.Option(
        None,
        "--voters",
        metavar="ID@HOST:PORT,...",
        help="Every node's controller (controller.quorum.voters): run one node of a cluster spread over "
        "hosts. Default: BTCFLOW_BROKER_VOTERS.",
        show_default=False,
    ),
    cluster_id: str | None = typer.Option(
        None,
        "--cluster-id",
        help="With --voters: the cluster's id, the same on every host (btcflow broker cluster-id). "
        "Default: BTCFLOW_BROKER_CLUSTER_ID.",
        show_default=False,
    ),
    auth: bool | None = typer.Option(
        None,
        "--auth/--no-auth",
        help="Require SASL/SCRAM-SHA-512 logins and ACLs, from the cluster's first start (fixed then): users "
        "admin, producer, consumer, monitor and gateway, each password kept in <home>/credentials/<user> "
        "(0600); the roles get their ACLs on BTCFLOW_TOPIC, its .dlq, BTCFLOW_CONSUMER_GROUP, "
        "BTCFLOW_MONITOR_GROUP and BTCFLOW_PREDICTION_TOPIC (btcflow-predictions when unset). "
        "Default: BTCFLOW_BROKER_AUTH, else off.",
        show_default=False,
    ),
    timeout: float = typer.Option(90.0, help="Seconds to wait for every node to answer."),
) -> None:
    from pipeline.settings import PipelineSettings

    settings = PipelineSettings()
    if not settings.embedded:
        typer.echo(_external(settings), err=True)
        typer.echo(settings.bootstrap)
        return
    given = {
        "broker_nodes": nodes,
        "broker_host": host,
        "broker_port": port,
        "broker_node_id": node_id,
        "broker_voters": voters,
        "broker_cluster_id": cluster_id,
        "broker_auth": auth,
    }
    settings = settings.model_copy(update={k: v for k, v in given.items() if v is not None})
    cluster = settings.embedded_cluster()
    bootstrap = cluster.start(timeout)
    if cluster.auth:
        typer.echo(_grant(settings, cluster, []), err=True)
    typer.echo(bootstrap)


@broker_app.command("grant")
def grant(
    topic: str | None = typer.Option(
        None, "--topic", help=f"The ingest topic (and its .dlq). Default: BTCFLOW_TOPIC, {defaults.TOPIC}."
    ),
    monitor_topic: Annotated[
        list[str] | None,
        typer.Option(
            "--monitor-topic", help="Another topic the monitor role may read (the demo's -live one)."
        ),
    ] = None,
) -> None:
    """Give the roles of a cluster that requires authentication their ACLs (idempotent), as admin.

    producer: write, describe, create and read (--resume) the topic and its .dlq. consumer: read,
    describe and create the topic, read its group (BTCFLOW_CONSUMER_GROUP). monitor: read the topic (and
    each --monitor-topic) and its group (BTCFLOW_MONITOR_GROUP). gateway: write, describe and create
    BTCFLOW_PREDICTION_TOPIC (btcflow-predictions when unset). Nothing else: no ACL, no access.
    """
    from core.errors import BadInput
    from pipeline.settings import PipelineSettings

    settings = PipelineSettings()
    if topic:
        settings = settings.model_copy(update={"topic": topic})
    if not settings.embedded:
        raise BadInput(_external(settings) + " (grant its ACLs with its own admin tools)")
    cluster = settings.embedded_cluster()
    if not cluster.requires_auth:
        raise BadInput(f"the cluster in {cluster.home} requires no authentication: no ACL to grant")
    typer.echo(_grant(settings, cluster, monitor_topic or []))


@broker_app.command("cluster-id")
def cluster_id_command() -> None:
    """Print a new cluster id, for the nodes of a cluster spread over hosts (--cluster-id)."""
    from services.kafka.cluster import new_cluster_id

    typer.echo(new_cluster_id())


@broker_app.command("stop")
def stop() -> None:
    """Stop every node of the embedded cluster cleanly (SIGTERM, SIGKILL after 30 s)."""
    from pipeline.settings import PipelineSettings

    settings = PipelineSettings()
    if not settings.embedded:
        typer.echo(_external(settings))
        return
    stopped = settings.embedded_cluster().stop()
    typer.echo("cluster stopped" if stopped else "cluster was not running")


@broker_app.command("status")
def status() -> None:
    """List every node (id, address, pid, running or not), the active controller and whether clients must
    log in (SASL/SCRAM and ACLs); exit 3 unless all run."""
    from pipeline.settings import PipelineSettings
    from services.kafka.admin import admin_client

    settings = PipelineSettings()
    if not settings.embedded:
        credential = settings.kafka_credential("admin")  # BTCFLOW_KAFKA_USERNAME's, if set
        # BrokerUnavailable (exit 3) when it does not answer, BrokerAuthFailed when it refuses the login
        admin_client(settings.bootstrap, credential=credential).close()
        login = f", accepting user {credential.username}" if credential else ""
        typer.echo(f"external cluster at {settings.bootstrap}: answering{login}")
        return
    state = settings.embedded_cluster().status()
    typer.echo(state.describe())
    if not state.running:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    app.add_typer(broker_app, name="broker")
