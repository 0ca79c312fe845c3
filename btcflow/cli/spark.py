"""`btcflow spark start|stop|status`: a Spark standalone cluster (master, workers, history server)."""

from __future__ import annotations

import typer

from btcflow.cli.groups import group

spark_app = group(
    help="A Spark standalone cluster on 127.0.0.1 (BTCFLOW_SPARK_HOST) from pyspark's own distribution: a "
    "master, workers and the history server. Train on it with BTCFLOW_SPARK_MASTER=spark://127.0.0.1:7077.",
)


@spark_app.command(
    "start",
    help="Start the cluster (idempotent) and print the master URL once every worker is ALIVE.\n\n"
    "Daemons already running are left alone (a running worker keeps its cores and memory: stop the "
    "cluster to change them); stopped or killed ones are started again. Each daemon is one JVM with a "
    "heap of BTCFLOW_SPARK_DAEMON_MEMORY (512m); executors get BTCFLOW_SPARK_EXECUTOR_MEMORY (1g) each "
    "from their worker's memory. Ports: BTCFLOW_SPARK_PORT (7077), BTCFLOW_SPARK_UI_PORT (8080), "
    "BTCFLOW_SPARK_WORKER_UI_PORT (8081, worker i takes + i - 1), BTCFLOW_SPARK_HISTORY_PORT (18080). "
    "Logs, pids and work folders go to <BTCFLOW_DATA_DIR>/spark/; the history server shows the event "
    "logs training writes to <BTCFLOW_DATA_DIR>/spark/events (BTCFLOW_SPARK_EVENT_DIR).\n\n"
    "On hosts that share nothing: `--workers 0` on the master's host (master and history server), "
    "`--join spark://MASTER:PORT` on each worker's host (its workers only), each with its own --host.",
)
def start(
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=0,
        help="Workers to run (0: only the master and the history server). Default: BTCFLOW_SPARK_WORKERS, "
        "else 1.",
        show_default=False,
    ),
    host: str | None = typer.Option(
        None,
        "--host",
        help="Address the daemons and their executors bind. Default: BTCFLOW_SPARK_HOST, else 127.0.0.1.",
        show_default=False,
    ),
    join: str | None = typer.Option(
        None,
        "--join",
        metavar="spark://HOST:PORT",
        help="Run only workers, registering with this master on another host. Default: BTCFLOW_SPARK_JOIN.",
        show_default=False,
    ),
    cores: int | None = typer.Option(
        None,
        "--cores",
        min=1,
        help="Cores each worker offers to executors. Default: BTCFLOW_SPARK_WORKER_CORES, else 2.",
        show_default=False,
    ),
    memory: str | None = typer.Option(
        None,
        "--memory",
        help="Memory each worker offers to executors, e.g. 2g or 1500m; at least the executor memory "
        "(BTCFLOW_SPARK_EXECUTOR_MEMORY, 1g). Default: BTCFLOW_SPARK_WORKER_MEMORY, else 2g.",
        show_default=False,
    ),
    timeout: float = typer.Option(120.0, help="Seconds to wait for every daemon to answer."),
) -> None:
    from services.spark.cluster import SparkCluster

    cluster = SparkCluster.from_settings(workers=workers, cores=cores, memory=memory, host=host, join=join)
    master = cluster.start(timeout)
    if cluster.join is None:
        typer.echo(f"master UI:      {cluster.ui_url}", err=True)
        typer.echo(f"history server: {cluster.history_url}", err=True)
    typer.echo(f"train on it:    export BTCFLOW_SPARK_MASTER={master}", err=True)
    typer.echo(master)


@spark_app.command("stop")
def stop() -> None:
    """Stop the master, every worker and the history server (SIGTERM, SIGKILL after 30 s)."""
    from services.spark.cluster import SparkCluster

    stopped = SparkCluster.from_settings().stop()
    typer.echo("Spark cluster stopped" if stopped else "Spark cluster was not running")


@spark_app.command("status")
def status() -> None:
    """List every daemon of the last start (address, pid, running or not); exit 3 unless all run."""
    from services.spark.cluster import SparkCluster

    state = SparkCluster.from_settings().status()
    typer.echo(state.describe())
    if not state.running:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    """Add `btcflow spark` to the root app."""
    app.add_typer(spark_app, name="spark")
