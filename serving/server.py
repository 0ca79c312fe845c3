"""The gateway process `btcflow serve` runs: uvicorn with one worker in this process, or N worker processes
on one port, subscribed to the registry's webhooks for as long as it runs.

With one worker the app is built here (nothing to share). With N, this process supervises N fresh worker
processes that build the app from the environment (`serving.app:app_from_env`): the webhook secret and the
run folder the workers share (`BTCFLOW_RUN_DIR`, where the worker that receives a delivery signals the
others) are put there first. Each worker listens on a socket of its own bound with SO_REUSEPORT, so the
kernel spreads new connections evenly among them. uvicorn's own `--workers` shares one socket, and a load
that opens its connections in a burst (wrk's 32 at once) could land nearly all of them on one worker.
The workers' metrics go to files in `<run folder>/metrics` (PROMETHEUS_MULTIPROC_DIR, set before the first
worker starts), so /metrics from any worker sums them all; a dead worker's live gauges leave the sums.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from core import logs
from core.secrets import mask_uri
from core.signals import stop_on_signals
from serving import metrics, webhooks
from serving.errors import ServingError
from serving.settings import ServingSettings

EARLY_EXIT_S = 15.0  # a worker that fails this soon after its start would fail again: stop instead


class GatewayFailed(ServingError):
    exit_code = 3
    code = "gateway_failed"


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
            mask_uri(
                f"webhook not registered ({type(exc).__name__}: {exc}); following the registry "
                f"by polling every {settings.poll_interval_s:g}s"
            )
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
            f"engine {settings.serving_engine}, registry {mask_uri(settings.tracking_uri)}, {follows})"
        )
        if workers == 1:  # in this process: no supervisor, nothing to share
            uvicorn.run(
                create_app(settings),
                host=host,
                port=port,
                workers=1,
                access_log=access_log,
                log_level=logs.name_of(logs.env_level()),
            )
            return
        run_dir = tempfile.mkdtemp(prefix="btcflow-gateway-")
        os.environ["BTCFLOW_RUN_DIR"] = run_dir
        metrics_dir = Path(run_dir) / "metrics"
        metrics.prepare_shared_dir(metrics_dir)
        try:
            supervise(host, port, workers, access_log, say, metrics_dir)
        finally:
            os.environ.pop(metrics.MULTIPROC_ENV, None)
            shutil.rmtree(run_dir, ignore_errors=True)


def listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to `host:port`; with `reuse_port`, one of a group the kernel balances."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GatewayFailed(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def worker(host: str, port: int, access_log: bool) -> None:
    """One worker process: the app from the environment, on its own SO_REUSEPORT socket of the shared port."""
    import uvicorn

    level = logs.env_level()  # a fresh interpreter: the level the command line exported
    logs.configure(level)
    sock = listening_socket(host, port, reuse_port=True)
    config = uvicorn.Config(
        "serving.app:app_from_env", factory=True, access_log=access_log, log_level=logs.name_of(level)
    )
    uvicorn.Server(config).run(sockets=[sock])


def supervise(
    host: str,
    port: int,
    workers: int,
    access_log: bool,
    say: Callable[[str], None],
    metrics_dir: Path | None = None,
) -> None:
    """Run `workers` worker processes until SIGINT/SIGTERM; start a new one for each that dies (its live
    gauges in `metrics_dir` dropped first, its counts kept: they happened).

    The port is probed first with a plain bind, which fails when anything listens there (a reuse-port
    group of another gateway included), so two gateways never share a port by accident.
    """
    listening_socket(host, port, reuse_port=False).close()
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters: no threads or JVM state inherited

    def start() -> tuple[BaseProcess, float]:
        proc = spawn.Process(target=worker, args=(host, port, access_log), name="btcflow-gateway-worker")
        proc.start()
        return proc, time.monotonic()

    with stop_on_signals() as stop:
        running = [start() for _ in range(workers)]
        try:
            while not stop.is_set():
                wait([proc.sentinel for proc, _ in running], timeout=0.5)
                for i, (proc, started) in enumerate(running):
                    if proc.is_alive() or stop.is_set():
                        continue
                    code = proc.exitcode or 0
                    if code > 0 and time.monotonic() - started < EARLY_EXIT_S:  # failed (not killed): again
                        raise GatewayFailed(f"a gateway worker exited with status {code} as it started")
                    say(f"gateway worker {proc.pid} exited with status {proc.exitcode}: starting another")
                    if metrics_dir is not None and proc.pid is not None:
                        metrics.worker_gone(proc.pid, metrics_dir)
                    running[i] = start()
        finally:
            for proc, _ in running:
                if proc.is_alive():
                    proc.terminate()  # SIGTERM: uvicorn finishes the requests in flight
            for proc, _ in running:
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
