"""`btcflow serve`: the HTTP gateway over the registry's Production models, in one or N uvicorn workers."""

from __future__ import annotations

import os

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""

    @app.command("serve")
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
        """Serve btc-close, btc-high-low and btc-trend from the MLflow registry's Production versions.

        Follows the registry (BTCFLOW_POLL_INTERVAL_S, and at once through an MLflow webhook with an
        http tracking server, BTCFLOW_WEBHOOKS) and swaps new versions in without downtime.
        Store: MLFLOW_TRACKING_URI; engine: BTCFLOW_SERVING_ENGINE (numpy, no JVM; or spark).
        """
        import secrets
        import shutil
        import tempfile

        import uvicorn

        from serving import webhooks
        from serving.app import create_app
        from serving.models import forbid_jvm_imports
        from serving.settings import ServingSettings

        settings = ServingSettings()
        # a remote registry that is down must cost one poll a few seconds, not MLflow's ~4 min of retries
        # (set in os.environ: the worker processes inherit it)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        if settings.serving_engine == "numpy":
            forbid_jvm_imports()  # a dedicated gateway process: keep the JVM bridge out entirely
        bind_host, bind_port = host or settings.host, port or settings.port
        count = workers or settings.workers
        hook_id, run_dir = None, None
        if webhooks.wanted(settings):
            secret = settings.webhook_secret or secrets.token_urlsafe(32)
            url = webhooks.url_for(settings, bind_host, bind_port)
            try:
                hook_id = webhooks.register(settings.tracking_uri, url, secret)
                os.environ["BTCFLOW_WEBHOOK_SECRET"] = secret  # every worker verifies with it
                settings = settings.model_copy(update={"webhook_secret": secret})
            except Exception as exc:  # any refusal: say it once, keep polling
                typer.echo(
                    f"webhook not registered ({type(exc).__name__}: {exc}); following the registry "
                    f"by polling every {settings.poll_interval_s:g}s",
                    err=True,
                )
        follows = f"poll {settings.poll_interval_s:g}s" + (" + webhook" if hook_id else "")
        typer.echo(
            f"btcflow gateway on http://{bind_host}:{bind_port} (docs: /docs, {count} worker(s), "
            f"engine {settings.serving_engine}, registry {settings.tracking_uri}, {follows})",
            err=True,
        )
        try:
            if count == 1:  # in this process: no supervisor, nothing to share
                uvicorn.run(
                    create_app(settings),
                    host=bind_host,
                    port=bind_port,
                    workers=1,
                    access_log=access_log,
                    log_level="warning",
                )
            else:  # fresh worker processes build the app from the environment set above
                run_dir = tempfile.mkdtemp(prefix="btcflow-gateway-")
                os.environ["BTCFLOW_RUN_DIR"] = run_dir
                uvicorn.run(
                    "serving.app:app_from_env",
                    factory=True,
                    host=bind_host,
                    port=bind_port,
                    workers=count,
                    access_log=access_log,
                    log_level="warning",
                )
        finally:
            if hook_id is not None:
                webhooks.unregister(settings.tracking_uri, hook_id)
            if run_dir is not None:
                shutil.rmtree(run_dir, ignore_errors=True)
