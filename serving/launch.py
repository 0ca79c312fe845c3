"""Run the gateway as its own process and call it: for `btcflow demo`, scripts and the process tests.

The gateway runs as `btcflow serve [--workers N]` in a child process (so its process holds no JVM bridge
even when the caller, like the demo, has Spark loaded), is waited on until every worker answers /ready,
and is stopped when the block ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO
from urllib.parse import urlencode

import httpx

from services.processes import free_port
from serving.errors import ServingError
from serving.settings import ServingSettings


class GatewayDidNotStart(ServingError):
    exit_code = 3
    code = "gateway_not_started"


def environment(settings: ServingSettings) -> dict[str, str]:
    """The child's environment: these settings, as the variables `ServingSettings` reads."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri}
    env["BTCFLOW_SERVING_ENGINE"] = settings.serving_engine
    env["BTCFLOW_POLL_INTERVAL_S"] = str(settings.poll_interval_s)
    env["BTCFLOW_MAX_ROWS"] = str(settings.max_rows)
    env["BTCFLOW_WEBHOOKS"] = settings.webhooks
    env["BTCFLOW_WEBHOOK_TOLERANCE_S"] = str(settings.webhook_tolerance_s)
    env["BTCFLOW_METRICS"] = str(settings.metrics).lower()
    env["BTCFLOW_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    env["BTCFLOW_PREDICTION_QUEUE"] = str(settings.prediction_queue)
    env["BTCFLOW_OPEN_METRICS"] = str(settings.open_metrics).lower()
    for name in ("BTCFLOW_PREDICTION_TOPIC", "BTCFLOW_API_KEYS_FILE"):
        env.pop(name, None)  # these settings' own, not one the caller's shell had
    for name, value in (
        ("BTCFLOW_ADMIN_TOKEN", settings.admin_token),
        ("BTCFLOW_WEBHOOK_SECRET", settings.webhook_secret),
        ("BTCFLOW_WEBHOOK_URL", settings.webhook_url),
        ("BTCFLOW_PREDICTION_TOPIC", settings.prediction_topic),
        ("BTCFLOW_API_KEYS_FILE", str(settings.api_keys_file) if settings.api_keys_file else None),
        ("BTCFLOW_KAFKA_USERNAME", settings.kafka_username),
        ("BTCFLOW_KAFKA_PASSWORD", settings.kafka_password and settings.kafka_password.get_secret_value()),
    ):
        if value:
            env[name] = value
    return env


@contextmanager
def running_gateway(
    settings: ServingSettings,
    port: int | None = None,
    ready_timeout_s: float = 120.0,
    workers: int = 1,
    api_key: str | None = None,
) -> Iterator[str]:
    """Start `btcflow serve --workers N` on settings.host and `port` (settings.port if None, a free one if
    0); yield its base URL once /ready answers 200 (from every worker: each loads the models itself); stop
    it (SIGTERM, then SIGKILL of its whole process group after 15 s) when the block ends. With
    settings.api_keys_file, `api_key` is what the wait shows GET /models (unless settings.open_metrics)."""
    port = free_port(settings.host) if port == 0 else port or settings.port
    base = f"http://{settings.host}:{port}"
    cmd = [sys.executable, "-m", "btcflow.cli", "serve", "--host", settings.host, "--port", str(port)]
    cmd += ["--workers", str(workers)]
    # stderr to an unnamed temporary file, not a pipe: nobody reads a pipe while the gateway runs, and a
    # full one (64 KiB of warnings) would block the gateway mid-write; the file is read only on failure
    with tempfile.TemporaryFile(prefix="btcflow-gateway-", suffix=".log") as log:
        # its own process group: the workers go with it even if the supervisor must be killed
        proc = subprocess.Popen(
            cmd, env=environment(settings), stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
        )
        try:
            _wait_ready(base, proc, ready_timeout_s, log, workers, bearer(api_key))
            yield base
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)


def _last_line(log: IO[bytes], tail_bytes: int = 8192) -> str:
    """The last non-empty line the gateway wrote to stderr, for a one-line error."""
    log.seek(0, os.SEEK_END)
    log.seek(max(0, log.tell() - tail_bytes))
    lines = log.read().decode(errors="replace").strip().splitlines()
    return lines[-1].strip() if lines else "no output"


def bearer(api_key: str | None) -> dict[str, str]:
    """The headers that carry `api_key`, none without one."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _wait_ready(
    base: str,
    proc: subprocess.Popen,
    timeout_s: float,
    log: IO[bytes],
    workers: int = 1,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Until /ready is 200 from `workers` distinct processes (by /models' pid), or the timeout."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    ready: set[int] = set()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise GatewayDidNotStart(f"gateway exited with {proc.returncode}: {_last_line(log)}")
        try:
            # a new connection each time: it may reach another worker
            with httpx.Client(base_url=base, timeout=2, headers=headers) as client:
                answer = client.get("/ready")
                if answer.status_code == 200:
                    models = client.get("/models")
                    if models.status_code == 401:  # a keyed gateway, and no key (or a wrong one) given
                        raise GatewayDidNotStart(
                            f"gateway at {base} is ready but GET /models needs an API key: "
                            f"{models.json().get('message', 'unauthorized')}"
                        )
                    ready.add(models.json()["pid"])
                    if len(ready) >= workers:
                        return
                    last = f"{len(ready)} of {workers} workers ready"
                else:
                    last = answer.json().get("message", answer.text)
        except (httpx.TransportError, ValueError, KeyError):
            pass
        time.sleep(0.1 if ready else 0.25)
    raise GatewayDidNotStart(f"gateway at {base} not ready after {timeout_s:.0f}s ({last})")


def example_queries(row: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Each GET route's query from one Kaggle row (keys Timestamp, Open, Close, Volume, ...)."""
    return {
        "close": {"timestamp": float(row["Timestamp"])},
        "high_low": {"open": float(row["Open"]), "volume": float(row["Volume"])},
        "trend": {"open": float(row["Open"]), "close": float(row["Close"]), "volume": float(row["Volume"])},
    }


def call_routes(
    base: str, row: Mapping[str, float], api_key: str | None = None
) -> list[tuple[str, int, dict]]:
    """Call the three GET routes with inputs from `row`: (curl command, status, answer) each. The curl
    commands name the key as $BTCFLOW_API_KEY, never the key itself."""
    out = []
    auth = ' -H "Authorization: Bearer $BTCFLOW_API_KEY"' if api_key else ""
    with httpx.Client(base_url=base, timeout=30, headers=bearer(api_key)) as client:
        for kind, query in example_queries(row).items():
            answer = client.get(f"/predict/{kind}", params=query)
            out.append(
                (f"curl{auth} '{base}/predict/{kind}?{urlencode(query)}'", answer.status_code, answer.json())
            )
    return out
