"""The gateway's Prometheus metrics: what it answered, how fast, with which model version, and its log's fate.

Counted once per request by a pure ASGI middleware (Starlette's BaseHTTPMiddleware runs each request
through an extra task and memory streams, which costs more than the counting itself) and once per answered
prediction by the routes. Label children are cached per (route, method, status) and per (model, version),
so the request path does a dict lookup and three increments, never prometheus-client's `labels()` parsing.

One worker process keeps its values in memory, in a registry of its own app (tests build many apps in one
process). With `btcflow serve --workers N` the supervisor sets PROMETHEUS_MULTIPROC_DIR before any worker
starts: prometheus-client then writes every value to per-process files there, and /metrics, answered by
any worker, merges all of them (counts of a worker that died included, its live gauges not).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client import values as prometheus_values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable, read once as it is imported
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus reads
UNMATCHED = "unmatched"  # the route label of a path no route matched: one label, not one per path scanned
# a GET is answered in well under a millisecond; a 10,000-row POST or the spark engine take longer
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def shared_dir() -> str | None:
    """The folder this process shares its values through, when it is one of several workers.

    Only if prometheus-client itself chose its file-backed values: it decides once, when first imported,
    from the variable; a process that set it later still keeps its values in memory.
    """
    path = os.environ.get(MULTIPROC_ENV)
    if path and getattr(prometheus_values.ValueClass, "_multiprocess", False):
        return path
    return None


def prepare_shared_dir(path: Path) -> None:
    """An empty folder for the workers' files, named in the environment the workers inherit.

    Called by the supervisor before it starts any worker; a folder left by an earlier run is emptied, as
    its counts belong to processes long gone.
    """
    if path.exists():
        for old in path.glob("*.db"):
            old.unlink()
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)


def worker_gone(pid: int, path: Path) -> None:
    """A worker died or was replaced: its live gauges (the log's queue depth) leave the sums."""
    multiprocess.mark_process_dead(pid, str(path))


class Metrics:
    """The gateway's metrics, one set per app; `exposition()` is the /metrics body."""

    def __init__(self) -> None:
        self.shared_dir = shared_dir()
        # shared: values go to files whatever the registry; the exposition reads the files back
        own = None if self.shared_dir else CollectorRegistry()
        http = ["route", "method", "status"]
        self.requests = Counter(
            "btcflow_http_requests", "HTTP requests answered, by route template", http, registry=own
        )
        self.errors = Counter(
            "btcflow_http_errors", "HTTP requests answered with status 400 or above", http, registry=own
        )
        self.latency = Histogram(
            "btcflow_http_request_duration_seconds",
            "Time from a request's arrival to its answer's last byte, by route template",
            ["route", "method"],
            buckets=BUCKETS,
            registry=own,
        )
        self.predictions = Counter(
            "btcflow_predictions",
            "Rows predicted (a GET is one, a POST its rows), by model name and version",
            ["name", "version"],
            registry=own,
        )
        self.log_sent = Counter(
            "btcflow_prediction_log_sent",
            "Predictions the broker acknowledged on the log's topic",
            registry=own,
        )
        self.log_dropped = Counter(
            "btcflow_prediction_log_dropped",
            "Predictions not logged: the queue was full, the broker unreachable, or a send failed",
            registry=own,
        )
        self.log_queue = Gauge(
            "btcflow_prediction_log_queue_depth",
            "Predictions waiting in the log's queue (sampled by its sender thread)",
            registry=own,
            multiprocess_mode="livesum",
        )
        if own is None:
            self.registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry, self.shared_dir)
        else:
            self.registry = own
        self._http: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self._models: dict[tuple[str, str], Any] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        children = self._http.get((route, method, status))
        if children is None:
            status_text = str(status)
            children = self._http[(route, method, status)] = (
                self.requests.labels(route, method, status_text),
                self.latency.labels(route, method),
                self.errors.labels(route, method, status_text) if status >= 400 else None,
            )
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def predicted(self, name: str, version: str, rows: int) -> None:
        child = self._models.get((name, version))
        if child is None:
            child = self._models[(name, version)] = self.predictions.labels(name, version)
        child.inc(rows)

    def exposition(self) -> bytes:
        """The Prometheus text of this process, or of every worker when they share a folder."""
        return generate_latest(self.registry)


class Instrumented:
    """Pure ASGI middleware: count and time each HTTP request under its route's template.

    The router writes the matched route into the request's scope (the same dict this middleware holds), so
    after the call `scope["route"].path` is `/predict/close` whatever the query. A request that raises
    before answering counts as the 500 the server then sends.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", UNMATCHED) if route is not None else UNMATCHED
            self.metrics.request(path, scope["method"], status, time.perf_counter() - start)
