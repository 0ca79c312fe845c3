"""`btcflow hdfs setup|start|join|stop|status`: an HDFS NameNode and DataNodes from Apache Hadoop's jars."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from btcflow.cli.groups import group
from services import defaults

if TYPE_CHECKING:
    from services.hdfs.settings import HdfsSettings

hdfs_app = group(
    help="An HDFS cluster run by btcflow: a NameNode and DataNodes, each one JVM from Apache Hadoop's own "
    "jars. Point the dataset at it with BTCFLOW_BATCH_URI=hdfs://127.0.0.1:9820/btcflow/batch.",
)

HOST_HELP = (
    f"Address the daemons bind and register under. Default: BTCFLOW_HDFS_HOST, else {defaults.HDFS_HOST}."
)


def _settings(host: str | None = None) -> HdfsSettings:
    from services.hdfs.settings import HdfsSettings

    settings = HdfsSettings()
    return settings.model_copy(update={"host": host}) if host else settings


@hdfs_app.command("setup")
def setup() -> None:
    """Resolve the Hadoop jars with Maven into the cache (once; again only when the pom changes)."""
    from services.hdfs.launcher import setup_jars

    typer.echo(f"Hadoop jars ready in {setup_jars(_settings().jars)}")


@hdfs_app.command(
    "start",
    help="Start the NameNode and DataNodes (idempotent) and print the hdfs:// address once every DataNode "
    "is live and the NameNode is out of safe mode.\n\n"
    "Daemons already running are left alone; stopped or killed ones are started again. Each is one JVM "
    f"with a heap of BTCFLOW_HDFS_HEAP ({defaults.HDFS_HEAP}). The NameNode listens on BTCFLOW_HDFS_PORT "
    f"({defaults.HDFS_PORT}), its web UI, JMX and WebHDFS on BTCFLOW_HDFS_HTTP_PORT "
    f"({defaults.HDFS_HTTP_PORT}); DataNodes take ports free at their start. Files, logs and pids go to "
    "<BTCFLOW_DATA_DIR>/hdfs/ (BTCFLOW_HDFS_DIR): namenode/ and datanode-<i>/; the namespace is formatted "
    "at the first start.",
)
def start(
    datanodes: int | None = typer.Option(
        None,
        "--datanodes",
        min=0,
        help="DataNodes to run on this host; 0 runs the NameNode alone (DataNodes `join` it). Default: as "
        f"the last start, else BTCFLOW_HDFS_DATANODES, else {defaults.HDFS_DATANODES}.",
        show_default=False,
    ),
    host: str | None = typer.Option(None, "--host", help=HOST_HELP, show_default=False),
    replication: int | None = typer.Option(
        None,
        "--replication",
        min=1,
        help="Replicas of each block, set when the NameNode starts. Default: BTCFLOW_HDFS_REPLICATION, "
        "else as many as DataNodes, at most 3.",
        show_default=False,
    ),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for every daemon."),
) -> None:
    settings = _settings(host)
    if replication is not None:
        settings = settings.model_copy(update={"replication": replication})
    cluster = settings.cluster()
    if datanodes is None:
        recorded = cluster.recorded_datanodes()
        datanodes = settings.datanodes if recorded is None else recorded
    address = cluster.start(datanodes, timeout)
    typer.echo(f"web UI: {cluster.http_url}", err=True)
    typer.echo(address)


@hdfs_app.command(
    "join",
    help="Start a DataNode on this host serving the NameNode at ADDRESS (hdfs://host:port), unless it "
    "runs, and print its address once the NameNode lists it live.\n\n"
    "Its files go to <BTCFLOW_DATA_DIR>/hdfs/datanode-<host>/; the NameNode's web port is "
    f"BTCFLOW_HDFS_HTTP_PORT ({defaults.HDFS_HTTP_PORT}). `btcflow hdfs stop` stops it.",
)
def join(
    address: str = typer.Argument(..., help="The NameNode, hdfs://host:port."),
    host: str | None = typer.Option(None, "--host", help=HOST_HELP, show_default=False),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for the DataNode to be live."),
) -> None:
    node = _settings(host).cluster().join(address, timeout)
    typer.echo(node.address)


@hdfs_app.command("stop")
def stop() -> None:
    """Stop every daemon of <BTCFLOW_DATA_DIR>/hdfs (SIGTERM, SIGKILL after 30 s)."""
    stopped = _settings().cluster().stop()
    typer.echo("HDFS stopped" if stopped else "HDFS was not running")


@hdfs_app.command(
    "status",
    help="List the NameNode, the live and dead DataNodes and their capacity; exit 3 unless every daemon "
    "of <BTCFLOW_DATA_DIR>/hdfs runs and the NameNode is out of safe mode.",
)
def status() -> None:
    state = _settings().cluster().status()
    typer.echo(state.describe())
    if not state.running:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    """Add `btcflow hdfs` to the root app."""
    app.add_typer(hdfs_app, name="hdfs")
