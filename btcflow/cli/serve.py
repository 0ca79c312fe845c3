"""`btcflow serve`: the HTTP gateway over the registry's Production models, in one uvicorn worker."""

from __future__ import annotations

import os

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""

    @app.command("serve")
    def serve(
        host: str = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1, BTCFLOW_HOST)."),
        port: int = typer.Option(None, "--port", help="Port to listen on (default 8000, BTCFLOW_PORT)."),
        access_log: bool = typer.Option(
            False, "--access-log/--no-access-log", help="Log every request (costs throughput)."
        ),
    ) -> None:
        """Serve btc-close, btc-high-low and btc-trend from the MLflow registry's Production versions.

        Follows the registry (BTCFLOW_POLL_INTERVAL_S) and swaps new versions in without downtime.
        Store: MLFLOW_TRACKING_URI; engine: BTCFLOW_SERVING_ENGINE (numpy, no JVM; or spark).
        """
        import uvicorn

        from serving.app import create_app
        from serving.models import forbid_jvm_imports
        from serving.settings import ServingSettings

        settings = ServingSettings()
        # a remote registry that is down must cost one poll a few seconds, not MLflow's ~4 min of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        if settings.serving_engine == "numpy":
            forbid_jvm_imports()  # a dedicated gateway process: keep the JVM bridge out entirely
        bind_host, bind_port = host or settings.host, port or settings.port
        typer.echo(
            f"btcflow gateway on http://{bind_host}:{bind_port} (docs: /docs, "
            f"engine {settings.serving_engine}, registry {settings.tracking_uri})",
            err=True,
        )
        uvicorn.run(
            create_app(settings),
            host=bind_host,
            port=bind_port,
            workers=1,
            access_log=access_log,
            log_level="warning",
        )
