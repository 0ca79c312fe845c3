"""`btcflow broker setup|start|stop|status`: the embedded KRaft cluster (one node by default)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from btcflow.cli.groups import group
from pipeline import defaults

if TYPE_CHECKING:
    from pipeline.settings import PipelineSettings

broker_app = group(
    help="The embedded Apache Kafka cluster (KRaft, each node a broker and a controller) on 127.0.0.1 "
    "(BTCFLOW_BROKER_HOST), or one node of a cluster spread over hosts (--voters).",
)


def _external(settings: PipelineSettings) -> str:
    return (
        f"BTCFLOW_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: btcflow uses that cluster and manages no broker"
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
    }
    settings = settings.model_copy(update={k: v for k, v in given.items() if v is not None})
    typer.echo(settings.embedded_cluster().start(timeout))


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
    """List every node (id, address, pid, running or not) and the active controller; exit 3 unless all run."""
    from pipeline.settings import PipelineSettings
    from services.kafka.admin import admin_client

    settings = PipelineSettings()
    if not settings.embedded:
        admin_client(settings.bootstrap).close()  # BrokerUnavailable (exit 3) when it does not answer
        typer.echo(f"external cluster at {settings.bootstrap}: answering")
        return
    state = settings.embedded_cluster().status()
    typer.echo(state.describe())
    if not state.running:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    app.add_typer(broker_app, name="broker")
