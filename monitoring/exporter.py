"""The monitor's Prometheus figures, served on its own /metrics (prometheus-client, the gateway's library).

Its own CollectorRegistry rather than the process-wide one: two monitors in one process (tests) never share
counters, and nothing else a library registers globally leaks into the page. Live metrics are gauges
labelled by model (the registered name), version and window (`60m`); a version that stops being scored
loses its series rather than showing stale figures. Bad messages are counted by a short reason label
(the full reason goes to the log), so a flood of odd values cannot grow the label set without bound.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

log = logging.getLogger("monitoring")

# The live metrics (monitoring.windows.metrics keys) and what each gauge says.
LIVE = {
    "rmse": "Root mean squared error, live (high_low: the mean of rmse_high and rmse_low)",
    "baseline_rmse": "The naive baseline's rmse on the same minutes",
    "rmse_high": "rmse of the predicted High (btc-high-low)",
    "rmse_low": "rmse of the predicted Low (btc-high-low)",
    "baseline_rmse_high": "rmse of Open as the High (btc-high-low's baseline)",
    "baseline_rmse_low": "rmse of Open as the Low (btc-high-low's baseline)",
    "accuracy": "Share of next-minute directions predicted right (btc-trend)",
    "roc_auc": "Area under the ROC curve of P(up) (btc-trend)",
    "baseline_accuracy": "Accuracy of persistence, the previous minute's direction (btc-trend's baseline)",
    "baseline_roc_auc": "roc_auc of persistence (btc-trend's baseline)",
    "minutes": "Minutes scored inside the window",
}

_REASONS = (
    ("empty value", "tombstone"),
    ("not JSON", "not_json"),
    ("not a JSON object", "not_object"),
    ("missing field", "missing_field"),
    ("is not a number", "not_number"),
    ("is not finite", "not_finite"),
)


def reason_label(reason: str) -> str:
    """pipeline.messages' reason, as a bounded label."""
    return next((label for text, label in _REASONS if text in reason), "other")


class Exporter:
    """Counters and gauges of one monitor, and the HTTP server that shows them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rows_read = Counter("btcflow_monitor_rows_read", "Rows read from the topic", registry=r)
        self.rows_scored = Counter(
            "btcflow_monitor_rows_scored", "Rows scored by every version in the lineup", registry=r
        )
        self.bad = Counter(
            "btcflow_monitor_bad_messages", "Messages that are not rows, by reason", ["reason"], registry=r
        )
        self.lag = Gauge(
            "btcflow_monitor_consumer_lag",
            "Messages in the partition after the monitor's position (as of its last fetch)",
            ["partition"],
            registry=r,
        )
        self.newest = Gauge(
            "btcflow_monitor_newest_timestamp_seconds", "Timestamp of the newest minute read", registry=r
        )
        self.registry_errors = Counter(
            "btcflow_monitor_registry_errors", "Registry refreshes that failed (scoring went on)", registry=r
        )
        self.scoring_errors = Counter(
            "btcflow_monitor_scoring_errors",
            "Polls a version failed to score",
            ["model", "version"],
            registry=r,
        )
        self.versions = Gauge(
            "btcflow_monitor_version_info",
            "1 for each version scored now, with its role (Production or challenger)",
            ["model", "version", "role"],
            registry=r,
        )
        self.live = {
            key: Gauge(f"btcflow_monitor_{key}", text, ["model", "version", "window"], registry=r)
            for key, text in LIVE.items()
        }
        self._server: Any = None
        self.url: str | None = None

    def bad_messages(self, reasons: Iterable[str]) -> None:
        for reason in reasons:
            self.bad.labels(reason_label(reason)).inc()

    def lineup(self, roles: Iterable[tuple[str, str, str]]) -> None:
        """The versions scored now: (registered name, version, role)."""
        self.versions.clear()
        for name, version, role in roles:
            self.versions.labels(name, version, role).set(1)

    def publish(self, name: str, version: str, figures: Mapping[int, Mapping[str, float]]) -> None:
        """One version's live metrics, {window minutes: metrics}."""
        for window, values in figures.items():
            for key, value in values.items():
                if key in self.live:
                    self.live[key].labels(name, version, f"{window}m").set(value)

    def forget(self, name: str, version: str) -> None:
        """A version no longer scored: its series go."""
        for gauge in self.live.values():
            gauge.remove_by_labels({"model": name, "version": version})

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def serve(self, host: str, port: int) -> str:
        """Serve /metrics on host:port (0: a free port) in a daemon thread; its URL."""
        from prometheus_client import start_http_server

        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self._server.server_port}/metrics"
        return self.url

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
