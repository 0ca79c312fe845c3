"""Rolling windows of scored minutes and their live metrics, pure numpy: testable without a broker.

A `RollingLog` keeps, for one model version, what each scored minute needs (truth, prediction, the naive
baseline's prediction) for the largest window only; a window of W minutes is the minutes of event time
in (newest - W, newest]. Model and baseline are always judged on the same minutes, with training's own
metric functions, so "rmse" means here what it means in a training run.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from training.metrics import classification, regression
from training.specs import Kind

# The columns each kind of model keeps per minute (besides `minute`).
COLUMNS: dict[Kind, tuple[str, ...]] = {
    "regression": ("actual", "predicted", "baseline"),
    "high_low": ("high", "low", "predicted_high", "predicted_low", "open"),
    "classification": ("label", "predicted", "probability_up", "baseline"),
}

# The naive baselines, for help texts and the README.
BASELINES: dict[Kind, str] = {
    "regression": "the previous minute's Close",
    "high_low": "Open for both High and Low",
    "classification": "persistence: the previous minute's direction (up if its Close rose)",
}


class RollingLog:
    """Scored minutes of one model version, trimmed to the last `span` minutes of event time."""

    def __init__(self, kind: Kind, span: int) -> None:
        self.kind = kind
        self.span = span
        self.minute = np.empty(0, dtype=np.int64)
        self.columns = {c: np.empty(0, dtype=np.float64) for c in COLUMNS[kind]}
        self.first: int | None = None  # the first minute this version ever scored (comparisons start there)
        self.scored = 0  # minutes added over the log's life

    @property
    def newest(self) -> int | None:
        return int(self.minute.max()) if len(self.minute) else None

    def add(self, minute: np.ndarray, columns: Mapping[str, np.ndarray]) -> None:
        """Append scored minutes (any order), then drop those older than the largest window."""
        if not len(minute):
            return
        if set(columns) != set(self.columns):
            raise ValueError(f"{self.kind} keeps {sorted(self.columns)}, not {sorted(columns)}")
        minute = np.asarray(minute, dtype=np.int64)
        self.minute = np.concatenate([self.minute, minute])
        for c in self.columns:
            self.columns[c] = np.concatenate([self.columns[c], np.asarray(columns[c], dtype=np.float64)])
        low = int(minute.min())
        self.first = low if self.first is None else min(self.first, low)
        self.scored += len(minute)
        keep = self.minute > int(self.minute.max()) - self.span
        if not keep.all():
            self.minute = self.minute[keep]
            self.columns = {c: v[keep] for c, v in self.columns.items()}

    def window(self, minutes: int, since: int | None = None) -> dict[str, np.ndarray]:
        """The columns of the last `minutes` minutes of event time (and from minute `since` on)."""
        if not len(self.minute):
            return {c: v[:0] for c, v in self.columns.items()}
        keep = self.minute > int(self.minute.max()) - minutes
        if since is not None:
            keep &= self.minute >= since
        return {c: v[keep] for c, v in self.columns.items()}


def metrics(kind: Kind, cols: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Live metrics of a window and the same metrics of its baseline (`baseline_<metric>`); `minutes`.

    close: rmse; high_low: rmse_high, rmse_low and their mean rmse; trend: accuracy and roc_auc.
    An empty window has `minutes` 0 and nothing else.
    """
    n = len(next(iter(cols.values())))
    out: dict[str, float] = {"minutes": float(n)}
    if n == 0:
        return out
    if kind == "regression":
        out["rmse"] = regression(cols["actual"], cols["predicted"])["rmse"]
        out["baseline_rmse"] = regression(cols["actual"], cols["baseline"])["rmse"]
    elif kind == "high_low":
        for prefix, high, low in (
            ("", cols["predicted_high"], cols["predicted_low"]),
            ("baseline_", cols["open"], cols["open"]),
        ):
            out[f"{prefix}rmse_high"] = regression(cols["high"], high)["rmse"]
            out[f"{prefix}rmse_low"] = regression(cols["low"], low)["rmse"]
            out[f"{prefix}rmse"] = (out[f"{prefix}rmse_high"] + out[f"{prefix}rmse_low"]) / 2
    else:
        model = classification(cols["label"], cols["predicted"], cols["probability_up"])
        base = classification(cols["label"], cols["baseline"], cols["baseline"])
        for key in ("accuracy", "roc_auc"):
            out[key], out[f"baseline_{key}"] = model[key], base[key]
    return out


def live(log: RollingLog, windows: tuple[int, ...]) -> dict[int, dict[str, float]]:
    """Every window's metrics for one version: {window minutes: metrics}."""
    return {w: metrics(log.kind, log.window(w)) for w in windows}
