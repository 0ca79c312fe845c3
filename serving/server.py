"""The gateway process `btcflow serve` runs: uvicorn with one worker in this process, or N worker processes
on one port, subscribed to the registry's webhooks for as long as it runs.

With one worker the app is built here (nothing to share). With N, uvicorn's supervisor starts fresh worker
processes that build the app from the environment (`serving.app:app_from_env`): the webhook secret and the
run folder the workers share (`BTCFLOW_RUN_DIR`, where the worker that receives a delivery signals the
others) are put there first.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from serving import webhooks
from serving.settings import ServingSettings


@contextmanager
def subscribed(
    settings: ServingSettings, host: str, port: int, say: Callable[[str], None]
) -> Iterator[ServingSettings]:
    """Register this gateway's webhook when there is a server to deliver it, delete it when the block ends.

    Yields the settings the workers need (with the secret). A server that refuses (no webhooks on its
    store, private addresses not allowed) costs one line through `say`: the gateway keeps polling.
    """
    if not webhooks.wanted(settings):
        yield settings
        return
    secret = settings.webhook_secret or secrets.token_urlsafe(32)
    try:
        hook_id: str | None = webhooks.register(
            settings.tracking_uri, webhooks.url_for(settings, host, port), secret
        )
    except Exception as exc:  # any refusal: say it once, keep polling
        say(
            f"webhook not registered ({type(exc).__name__}: {exc}); following the registry "
            f"by polling every {settings.poll_interval_s:g}s"
        )
        hook_id = None
    if hook_id is None:
        yield settings
        return
    os.environ["BTCFLOW_WEBHOOK_SECRET"] = secret  # every worker verifies with it
    try:
        yield settings.model_copy(update={"webhook_secret": secret})
    finally:
        webhooks.unregister(settings.tracking_uri, hook_id)


def serve(
    settings: ServingSettings,
    host: str,
    port: int,
    workers: int,
    access_log: bool,
    say: Callable[[str], None],
) -> None:
    """Serve until SIGINT/SIGTERM; `say` gets the lines for the user (the address, a refused webhook)."""
    import uvicorn

    from serving.app import create_app

    # a remote registry that is down must cost one poll a few seconds, not MLflow's ~4 min of retries
    # (in os.environ: the worker processes inherit it)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    with subscribed(settings, host, port, say) as settings:
        follows = f"poll {settings.poll_interval_s:g}s" + (" + webhook" if settings.webhook_secret else "")
        say(
            f"btcflow gateway on http://{host}:{port} (docs: /docs, {workers} worker(s), "
            f"engine {settings.serving_engine}, registry {settings.tracking_uri}, {follows})"
        )
        # one worker: the app is built in this process; N: fresh worker processes build it from the
        # environment set here, and share a run folder to signal each other that the registry changed
        run_dir = tempfile.mkdtemp(prefix="btcflow-gateway-") if workers > 1 else None
        if run_dir is not None:
            os.environ["BTCFLOW_RUN_DIR"] = run_dir
        try:
            uvicorn.run(
                create_app(settings) if run_dir is None else "serving.app:app_from_env",
                factory=run_dir is not None,
                host=host,
                port=port,
                workers=workers,
                access_log=access_log,
                log_level="warning",
            )
        finally:
            if run_dir is not None:
                shutil.rmtree(run_dir, ignore_errors=True)
