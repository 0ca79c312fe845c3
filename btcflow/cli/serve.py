"""`btcflow serve`: the HTTP gateway over the registry's Production models, in one or N uvicorn workers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from serving.settings import ServingSettings


def gateway_login(settings: ServingSettings) -> ServingSettings:
    """The settings with the `gateway` user's kept credential when the prediction log goes to an embedded
    cluster that requires authentication and BTCFLOW_KAFKA_USERNAME is unset."""
    if not settings.prediction_topic or settings.kafka_username:
        return settings
    from pydantic import SecretStr

    from pipeline.settings import PipelineSettings
    from services.kafka.auth import GATEWAY

    credential = PipelineSettings().kafka_credential(GATEWAY)
    if credential is None:
        return settings
    login = {"kafka_username": credential.username, "kafka_password": SecretStr(credential.password)}
    return settings.model_copy(update=login)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""

    @app.command(
        "serve",
        help="Serve btc-close, btc-high-low and btc-trend from the MLflow registry's Production versions."
        "\n\nFollows the registry (every BTCFLOW_POLL_INTERVAL_S, and at once through an MLflow webhook with "
        "a tracking server, BTCFLOW_WEBHOOKS) and swaps new versions in without downtime. Store: "
        "MLFLOW_TRACKING_URI; engine: BTCFLOW_SERVING_ENGINE (numpy, no JVM; or spark).",
    )
    def serve(
        host: str = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1, BTCFLOW_HOST)."),
        port: int = typer.Option(None, "--port", help="Port to listen on (default 8000, BTCFLOW_PORT)."),
        workers: int = typer.Option(
            None, "--workers", min=1, help="Worker processes on the port (default 1, BTCFLOW_WORKERS)."
        ),
        access_log: bool = typer.Option(
            False, "--access-log/--no-access-log", help="Log every request (costs throughput)."
        ),
    ) -> None:
        from btcflow.cli.tracking import as_role
        from serving.evaluate import forbid_jvm_imports
        from serving.server import serve as run
        from serving.settings import ServingSettings

        settings = gateway_login(ServingSettings())
        as_role(settings.tracking_uri, "reader")  # its workers inherit the environment
        if settings.serving_engine == "numpy":
            forbid_jvm_imports()  # a dedicated gateway process: keep the JVM bridge out entirely
        run(
            settings,
            host or settings.host,
            port or settings.port,
            workers or settings.workers,
            access_log,
            lambda line: typer.echo(line, err=True),
        )
