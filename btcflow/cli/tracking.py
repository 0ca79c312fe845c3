"""`btcflow tracking start|stop|status`: the MLflow tracking server on btcflow's own PostgreSQL."""

from __future__ import annotations

import typer

from btcflow.cli.groups import group

tracking_app = group(
    help="The MLflow tracking server on 127.0.0.1: PostgreSQL backend store, artifacts proxied over HTTP.",
)


@tracking_app.command(
    "start",
    help="Start PostgreSQL and `mlflow server` (idempotent) and print the address once /health answers.\n\n"
    "Parts already running are left alone. The server listens on 127.0.0.1:BTCFLOW_TRACKING_PORT (5000), "
    "its PostgreSQL on 127.0.0.1:BTCFLOW_POSTGRES_PORT (5433); files in <BTCFLOW_DATA_DIR>/tracking, "
    "postgres and mlflow-artifacts.",
)
def start(
    backend_store_uri: str | None = typer.Option(
        None,
        "--backend-store-uri",
        metavar="URI",
        help="A database of your own (e.g. postgresql+psycopg2://user:pw@host/db): btcflow starts no "
        "PostgreSQL. Default: BTCFLOW_TRACKING_BACKEND_STORE_URI, else btcflow's own.",
        show_default=False,
    ),
    timeout: float = typer.Option(120.0, help="Seconds to wait for PostgreSQL and the server to answer."),
) -> None:
    from services.mlflow_server import TrackingServer, TrackingServerSettings

    server = TrackingServer.from_settings(TrackingServerSettings(), backend_store_uri)
    uri = server.start(timeout)
    pg = server.postgres
    store = "a database of your own" if pg is None else f"PostgreSQL {pg.process.address}"
    typer.echo(f"MLflow tracking server at {uri} ({store}, artifacts in {server.artifacts})")
    typer.echo(f"export MLFLOW_TRACKING_URI={uri}")


@tracking_app.command("stop")
def stop() -> None:
    """Stop the server, then btcflow's PostgreSQL (SIGTERM / pg_ctl stop -m fast)."""
    from services.mlflow_server import TrackingServer, TrackingServerSettings

    settings = TrackingServerSettings()
    stopped = TrackingServer.from_settings(settings).stop()
    typer.echo("tracking server stopped" if stopped else "tracking server was not running")


@tracking_app.command("status")
def status() -> None:
    """List PostgreSQL and the server (address, pid, running); exit 3 unless both run."""
    from services.mlflow_server import TrackingServer, TrackingServerSettings

    state = TrackingServer.from_settings(TrackingServerSettings()).status()
    typer.echo(state.describe())
    if not state.all_running:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    app.add_typer(tracking_app, name="tracking")
