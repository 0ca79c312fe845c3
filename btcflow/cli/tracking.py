"""`btcflow tracking start|stop|status|user`: the MLflow tracking server on btcflow's own PostgreSQL, with
MLflow's own authentication; and `as_role`, which every command that calls it uses first."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from btcflow.cli.groups import group

if TYPE_CHECKING:
    from services.mlflow_server import TrackingServer

tracking_app = group(
    help="The MLflow tracking server on 127.0.0.1 (BTCFLOW_TRACKING_HOST): PostgreSQL backend store, "
    "artifacts proxied over HTTP.",
)


@tracking_app.command(
    "start",
    help="Start PostgreSQL and `mlflow server` (idempotent) and print the address once /health answers.\n\n"
    "Parts already running are left alone. The server listens on BTCFLOW_TRACKING_HOST:BTCFLOW_TRACKING_PORT "
    "(127.0.0.1:5000), its PostgreSQL on BTCFLOW_POSTGRES_HOST:BTCFLOW_POSTGRES_PORT (127.0.0.1:5433, where "
    "the server reaches it); files in <BTCFLOW_DATA_DIR>/tracking, postgres and mlflow-artifacts.",
)
def start(
    host: str | None = typer.Option(
        None,
        "--host",
        help="Address the server binds and prints. Default: BTCFLOW_TRACKING_HOST, else 127.0.0.1.",
        show_default=False,
    ),
    postgres_host: str | None = typer.Option(
        None,
        "--postgres-host",
        help="Address btcflow's PostgreSQL binds (and the server reaches it at). Default: "
        "BTCFLOW_POSTGRES_HOST, else 127.0.0.1.",
        show_default=False,
    ),
    backend_store_uri: str | None = typer.Option(
        None,
        "--backend-store-uri",
        metavar="URI",
        help="A database of your own, with no password in it (e.g. "
        "postgresql+psycopg2://user@host:5432/mlflow, the password in ~/.pgpass): btcflow starts no "
        "PostgreSQL. A URI with a password goes in BTCFLOW_TRACKING_BACKEND_STORE_URI or "
        "--backend-store-uri-file, never the command line.",
        show_default=False,
    ),
    backend_store_uri_file: Annotated[
        Path | None,
        typer.Option(
            "--backend-store-uri-file",
            metavar="PATH",
            help="A file (keep it 0600) whose first line is the database's URI, password included.",
            show_default=False,
        ),
    ] = None,
    timeout: float = typer.Option(120.0, help="Seconds to wait for PostgreSQL and the server to answer."),
) -> None:
    from core.errors import BadInput
    from core.secrets import has_password, read_uri_file
    from services.mlflow_server import TrackingServer, TrackingServerSettings
    from training.tracking import runs_link

    if backend_store_uri and has_password(backend_store_uri):  # `ps` and the shell's history show argv
        raise BadInput(
            "--backend-store-uri: no password on the command line (every user's ps shows it): put the URI in "
            "BTCFLOW_TRACKING_BACKEND_STORE_URI or a 0600 file given to --backend-store-uri-file"
        )
    if backend_store_uri and backend_store_uri_file:
        raise BadInput("give --backend-store-uri or --backend-store-uri-file, not both")
    if backend_store_uri_file:
        try:
            backend_store_uri = read_uri_file(backend_store_uri_file)
        except ValueError as exc:
            raise BadInput(f"--backend-store-uri-file: {exc}") from None
    settings = TrackingServerSettings()
    given = {"tracking_host": host, "postgres_host": postgres_host}
    settings = settings.model_copy(update={k: v for k, v in given.items() if v is not None})
    server = TrackingServer.from_settings(settings, backend_store_uri)
    uri = server.start(timeout)
    as_role(uri, "reader")  # the link below asks the server for the experiment's id
    pg = server.postgres
    store = "a database of your own" if pg is None else f"PostgreSQL {pg.process.address}"
    typer.echo(f"MLflow tracking server at {uri} ({store}, artifacts in {server.artifacts})")
    typer.echo(f"export MLFLOW_TRACKING_URI={uri}")
    typer.echo(f"authentication: basic-auth; credentials (user:password, 0600) in {server.admin_file.parent}")
    typer.echo(f"compare runs: {runs_link(uri)}")


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


user_app = group(
    help="The tracking server's users (with the admin credential kept in <BTCFLOW_DATA_DIR>/tracking/"
    "credentials/admin): trainer (runs, versions, stages, aliases) or reader (runs, registry, artifacts).",
)


class Role(StrEnum):
    trainer = "trainer"
    reader = "reader"


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The new user's name.")],
    role: Annotated[Role, typer.Option("--role", help="trainer or reader.")],
) -> None:
    """Create a user with a generated password and a role; the password is printed once, here only."""
    credential = _server().auth_admin().add_user(name, role.value)
    typer.echo(f"user {credential.username} ({role.value}) created; its password, shown only this once:")
    typer.echo(credential.password)


@user_app.command("list")
def user_list() -> None:
    """Every user of the server and its roles."""
    for user in _server().auth_admin().users():
        roles = ", ".join(user.roles) or ("admin" if user.admin else "no role: may do nothing")
        typer.echo(f"{user.name:<24} {roles}")


@user_app.command("remove")
def user_remove(name: Annotated[str, typer.Argument(help="The user to delete.")]) -> None:
    """Delete a user (its grants go with it)."""
    _server().auth_admin().remove_user(name)
    typer.echo(f"user {name} removed")


def _server() -> TrackingServer:
    from core.errors import Unavailable
    from services.mlflow_server import TrackingServer, TrackingServerSettings

    server = TrackingServer.from_settings(TrackingServerSettings())
    if not server.status().running:
        raise Unavailable(f"no MLflow tracking server runs at {server.uri} (btcflow tracking start)")
    return server


def as_role(tracking_uri: str, role: str) -> str | None:
    """Call the tracking server as MLFLOW_TRACKING_USERNAME/PASSWORD when set, else (when `tracking_uri` is
    the server of BTCFLOW_DATA_DIR) as the service user its start kept for `role`; the user, or None."""
    from core.access import use_kept_credential
    from services.mlflow_server import TrackingServerSettings

    settings = TrackingServerSettings()
    return use_kept_credential(tracking_uri, settings.uri, settings.data_dir, role)


def register(app: typer.Typer) -> None:
    tracking_app.add_typer(user_app, name="user")
    app.add_typer(tracking_app, name="tracking")
