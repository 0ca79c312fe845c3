"""`btcflow stack up|status|down`: HDFS, the Kafka cluster, the Spark cluster and the MLflow server together.

Each part is the same object its own command group drives (`hdfs`, `broker`, `spark`, `tracking`); the stack
only points the environment at its own data dir, starts the parts in the order the flow needs them,
prints every address and the exports that point btcflow's commands at them, and stops them in the
reverse order. It keeps its files apart from the embedded defaults (`data/stack/`, Kafka on 9192+), so
`make demo` and `make demo-cluster` never meet. What the roles share lives on HDFS, not on a disk: the
dataset (BTCFLOW_BATCH_URI), Spark's event logs and MLflow's Spark-model staging (MLFLOW_DFS_TMP).

Authentication is on wherever the service offers it: Kafka asks for SASL/SCRAM logins and grants by ACL
(services.kafka.auth), MLflow runs its basic-auth app (services.mlflow_auth), the gateway asks for an API
key (BTCFLOW_API_KEYS_FILE, serving.keys). HDFS and Spark's standalone cluster trust whoever reaches them
(Hadoop's "simple" authentication, no Spark secret): `stack status` says so rather than hide it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from btcflow.cli.groups import group
from services.defaults import (
    STACK_BROKER_PORT,
    STACK_DATANODES,
    STACK_DIR,
    STACK_NODES,
    STACK_SPARK_WORKERS,
)

# where the stack keeps, on HDFS, what every role reads
HDFS_BATCH = "/btcflow/batch"
HDFS_EVENTS = "/btcflow/spark-events"
HDFS_MLFLOW_TMP = "/btcflow/mlflow-tmp"

stack_app = group(
    help="The whole stack on 127.0.0.1: HDFS (the dataset, Spark's event logs), a Kafka cluster, a Spark "
    f"standalone cluster (with its history server) and an MLflow tracking server on PostgreSQL, with its "
    f"files in {STACK_DIR}/.",
)


def point_at_stack(nodes: int | None = None) -> dict[str, str]:
    """Set this process's environment to the stack's and return those variables.

    The node count is `nodes`, else the one the stack's Kafka storage was formatted with, else 3.
    The HDFS, Spark and MLflow addresses are their own settings' (BTCFLOW_HDFS_PORT, BTCFLOW_SPARK_PORT,
    BTCFLOW_TRACKING_PORT).
    """
    from btcflow.cli.stack_settings import StackSettings
    from pipeline.settings import PipelineSettings

    stack = StackSettings()
    os.environ.update({"BTCFLOW_DATA_DIR": str(stack.dir), "BTCFLOW_BROKER_PORT": str(stack.broker_port)})
    os.environ.pop("BTCFLOW_KAFKA_BOOTSTRAP", None)  # the stack's Kafka is its own embedded cluster
    formatted = PipelineSettings().embedded_cluster().formatted_nodes()
    os.environ["BTCFLOW_BROKER_NODES"] = str(nodes or formatted or STACK_NODES)

    from services.hdfs.settings import HdfsSettings
    from services.mlflow_server import TrackingServerSettings
    from services.spark.settings import SparkSettings

    hdfs = HdfsSettings().address
    os.environ["BTCFLOW_BATCH_URI"] = f"{hdfs}{HDFS_BATCH}"
    os.environ["BTCFLOW_SPARK_EVENT_DIR"] = f"{hdfs}{HDFS_EVENTS}"
    os.environ["MLFLOW_DFS_TMP"] = f"{hdfs}{HDFS_MLFLOW_TMP}"
    os.environ["BTCFLOW_SPARK_MASTER"] = SparkSettings().master_url
    os.environ["MLFLOW_TRACKING_URI"] = TrackingServerSettings().uri
    os.environ["BTCFLOW_API_KEYS_FILE"] = str(keys_file(stack.dir))
    names = ["BTCFLOW_DATA_DIR", "BTCFLOW_BROKER_NODES", "BTCFLOW_BROKER_PORT", "BTCFLOW_BATCH_URI"]
    names += ["BTCFLOW_SPARK_EVENT_DIR", "MLFLOW_DFS_TMP", "BTCFLOW_SPARK_MASTER", "MLFLOW_TRACKING_URI"]
    names += ["BTCFLOW_API_KEYS_FILE"]
    return {name: os.environ[name] for name in names}


def keys_file(stack_dir: Path) -> Path:
    """The stack gateway's API keys (hashes only)."""
    return stack_dir / "gateway" / "api-keys.json"


def _parts(spark_workers: int | None = None) -> tuple[Any, Any, Any, Any]:
    """HDFS, the Kafka cluster, the Spark cluster and the tracking server, as the environment points."""
    from pipeline.settings import PipelineSettings
    from services.hdfs.settings import HdfsSettings
    from services.mlflow_server import TrackingServer, TrackingServerSettings
    from services.spark.cluster import SparkCluster
    from services.spark.settings import SparkSettings

    return (
        HdfsSettings().cluster(),
        PipelineSettings().embedded_cluster(),
        SparkCluster.from_settings(SparkSettings(), workers=spark_workers),
        TrackingServer.from_settings(TrackingServerSettings()),
    )


def up(nodes: int | None = None, spark_workers: int | None = None, datanodes: int | None = None) -> str:
    """Start what does not run yet (each part is idempotent); every address and the exports, to print.
    A count not given is the stack's setting (BTCFLOW_STACK_NODES, _SPARK_WORKERS, _DATANODES)."""
    from btcflow.cli.stack_settings import StackSettings
    from core.storage import open_storage
    from services.kafka.auth import USERS
    from serving.keys import ensure_file

    stack = StackSettings()
    nodes, spark_workers = nodes or stack.nodes, spark_workers or stack.spark_workers
    datanodes = datanodes or stack.datanodes
    env = point_at_stack(nodes)
    hdfs, kafka, spark, tracking = _parts(spark_workers)
    typer.echo(f"starting HDFS (a NameNode, {datanodes} DataNode(s), files in {hdfs.home})...", err=True)
    address = hdfs.start(datanodes, 180.0)
    for uri in (env["BTCFLOW_BATCH_URI"], env["BTCFLOW_SPARK_EVENT_DIR"], env["MLFLOW_DFS_TMP"]):
        open_storage(uri).make_folder()
    typer.echo(f"starting Kafka ({nodes} node(s), logins and ACLs, files in {kafka.home})...", err=True)
    kafka.auth = True
    bootstrap = kafka.start(180.0)
    _grant_stack(kafka)
    typer.echo(f"starting Spark (master, {spark_workers} worker(s), history server)...", err=True)
    master = spark.start(180.0)
    typer.echo("starting PostgreSQL and the MLflow tracking server...", err=True)
    uri = tracking.start(180.0)
    keys = Path(env["BTCFLOW_API_KEYS_FILE"])
    ensure_file(keys)  # the gateway starts, and refuses every call until `btcflow keys create`
    lines = [
        f"HDFS           {address} ({datanodes} DataNode(s), web UI {hdfs.http_url})",
        f"Kafka          {bootstrap} ({nodes} node(s))",
        f"Spark master   {master} (web UI {spark.ui_url})",
        f"Spark history  {spark.history_url}",
        f"MLflow         {uri} (PostgreSQL backend, artifacts proxied)",
        "",
        "credentials (0600, each shown only in its file):",
        f"  Kafka        {kafka.home / 'credentials'}/{{{','.join(USERS)}}}",
        f"  MLflow       {tracking.admin_file.parent}/{{admin,trainer,reader}}",
        f"  gateway      {keys} (hashes; `btcflow keys create NAME` prints a key once)",
        "",
        "point btcflow at it (`btcflow demo --stack` does this itself):",
    ]
    return "\n".join(lines + [f"  export {name}={value}" for name, value in env.items()])


def _grant_stack(kafka: Any) -> None:
    """The roles' ACLs on the stack's topics and groups: the ingest topic and the demo's live one."""
    from btcflow.cli.broker import role_names
    from pipeline.defaults import live_topic
    from pipeline.settings import PipelineSettings

    settings = PipelineSettings()
    for topic in (settings.topic, live_topic(settings.topic)):
        kafka.grant(role_names(settings.model_copy(update={"topic": topic})))


@stack_app.command(
    "up",
    help="Start HDFS, the Kafka cluster, the Spark cluster and the MLflow server (idempotent); print the "
    "exports.\n\nParts already running are left alone. Files go to BTCFLOW_STACK_DIR "
    f"({STACK_DIR}), apart from the embedded defaults; Kafka listens on BTCFLOW_STACK_BROKER_PORT "
    f"({STACK_BROKER_PORT}) and up, the Spark master on "
    "BTCFLOW_SPARK_PORT (7077; web UI 8080, history server 18080), MLflow on BTCFLOW_TRACKING_PORT (5000) "
    "with PostgreSQL on BTCFLOW_POSTGRES_PORT (5433), HDFS's NameNode on BTCFLOW_HDFS_PORT (9820; web UI "
    f"9870) with {STACK_DATANODES} DataNodes: the dataset in {HDFS_BATCH}, Spark's event logs in "
    f"{HDFS_EVENTS}, MLflow's Spark-model staging in {HDFS_MLFLOW_TMP}.",
)
def up_command(
    nodes: int = typer.Option(
        None, "--nodes", min=1, help=f"Kafka nodes (default {STACK_NODES}, BTCFLOW_STACK_NODES)."
    ),
    spark_workers: int = typer.Option(
        None,
        "--spark-workers",
        min=1,
        help=f"Spark standalone workers (default {STACK_SPARK_WORKERS}, BTCFLOW_STACK_SPARK_WORKERS).",
    ),
    datanodes: int = typer.Option(
        None,
        "--datanodes",
        min=1,
        help=f"HDFS DataNodes, blocks kept min(3, N) times (default {STACK_DATANODES}, "
        "BTCFLOW_STACK_DATANODES).",
    ),
) -> None:
    typer.echo(up(nodes, spark_workers, datanodes))


@stack_app.command("status")
def status() -> None:
    """Each part's status; exit 3 unless every part runs."""
    env = point_at_stack()
    parts = _parts()
    hdfs, kafka, spark, tracking = (part.status() for part in parts)
    states = [state.describe() for state in (hdfs, kafka, spark, tracking)]
    typer.echo("\n\n".join([*states, _access(parts[1], parts[3], Path(env["BTCFLOW_API_KEYS_FILE"]))]))
    if not (hdfs.running and kafka.running and spark.running and tracking.all_running):
        raise typer.Exit(3)


def _access(kafka: Any, tracking: Any, keys: Path) -> str:
    """Which parts ask who calls them, and which do not."""
    from serving.keys import read_keys

    formatted = kafka.formatted_auth()
    kafka_line = {
        True: f"SASL/SCRAM-SHA-512 logins and ACLs (credentials in {kafka.home / 'credentials'}/)",
        None: "SASL/SCRAM-SHA-512 logins and ACLs, from its first `btcflow stack up`",
        False: "none: formatted before the stack turned logins on "
        f"(`btcflow stack down`, remove {kafka.home}, `btcflow stack up`)",
    }[formatted]
    active = sum(k.active for k in read_keys(keys)) if keys.exists() else 0
    return "\n".join(
        [
            "authentication:",
            f"  Kafka    {kafka_line}",
            f"  MLflow   basic-auth, roles trainer and reader (credentials in {tracking.admin_file.parent}/)",
            f"  gateway  API keys in {keys} ({active} active; `btcflow keys create NAME`)",
            "  HDFS     none: Hadoop's simple authentication believes the user name a client sends",
            "  Spark    none: the standalone master takes any application that reaches it",
        ]
    )


@stack_app.command("down")
def down() -> None:
    """Stop the MLflow server and PostgreSQL, the Spark cluster, the Kafka cluster, then HDFS."""
    point_at_stack()
    hdfs, kafka, spark, tracking = _parts()
    parts = (
        ("tracking server", tracking),
        ("Spark cluster", spark),
        ("Kafka cluster", kafka),
        ("HDFS", hdfs),
    )
    for name, part in parts:
        typer.echo(f"{name} {'stopped' if part.stop() else 'was not running'}")


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")
