"""Rolling windows of scored minutes and their live metrics, pure numpy: testable without a broker.

A `RollingLog` keeps, for one model version, what each scored minute needs (truth, prediction, the naive
baseline's prediction) for the largest window only; a window of W minutes is the minutes of event time
in (newest - W, newest]. Model and baseline are always judged on the same minutes, with training's own
metric functions, so "rmse" means here what it means in a training run.

With `series` windows, each `add` also records the figures of every minute it brings, as of that minute
(the window ending there): the points of the live charts, one per minute, however many minutes a poll
carries. They are computed before the log is trimmed (a 10,000-row backlog poll still charts its early
minutes over their full window), with running sums, and roc_auc with a sliding pair count, so a backlog
costs about what live scoring does; `series_points` checks them against `metrics` in the tests.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Points:
    """The live figures at each of some minutes: {window: {metric: values}}, one value per minute."""

    minute: np.ndarray  # (n,) int64, ascending
    figures: dict[int, dict[str, np.ndarray]]


class RollingLog:
    """Scored minutes of one model version, sorted by minute, trimmed to the last `span` minutes of event
    time; with `series` windows, the per-minute figures of what was added wait in `points` to be drained."""

    def __init__(self, kind: Kind, span: int, series: tuple[int, ...] = ()) -> None:
        self.kind = kind
        self.span = max(span, *series) if series else span
        self.series = series
        self.minute = np.empty(0, dtype=np.int64)
        self.columns = {c: np.empty(0, dtype=np.float64) for c in COLUMNS[kind]}
        self.first: int | None = None  # the first minute this version ever scored (comparisons start there)
        self.scored = 0  # minutes added over the log's life
        self.points: list[Points] = []

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
        if len(self.minute) > 1 and bool(np.any(np.diff(self.minute) < 0)):  # a late or replayed minute
            order = np.argsort(self.minute, kind="stable")
            self.minute = self.minute[order]
            self.columns = {c: v[order] for c, v in self.columns.items()}
        if self.series:
            targets = np.unique(minute)
            self.points.append(
                Points(
                    targets,
                    {w: series_points(self.kind, self.minute, self.columns, targets, w) for w in self.series},
                )
            )
        low = int(minute.min())
        self.first = low if self.first is None else min(self.first, low)
        self.scored += len(minute)
        keep = self.minute > int(self.minute.max()) - self.span
        if not keep.all():
            self.minute = self.minute[keep]
            self.columns = {c: v[keep] for c, v in self.columns.items()}

    def drain(self) -> list[Points]:
        """The per-minute figures recorded since the last drain (the caller logs them)."""
        points, self.points = self.points, []
        return points

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


def series_points(
    kind: Kind, minute: np.ndarray, cols: Mapping[str, np.ndarray], targets: np.ndarray, window: int
) -> dict[str, np.ndarray]:
    """`metrics` of the window ending at each target minute, (t - window, t], at once for all targets.

    `minute` is ascending and holds every target. Means come from running sums; the baseline's roc_auc
    (a 0/1 score) from counts; the model's roc_auc from `SlidingAuc`, one step per target.
    """
    lo = np.searchsorted(minute, targets - window, side="right")
    hi = np.searchsorted(minute, targets, side="right")
    n = (hi - lo).astype(np.float64)

    def mean(values: np.ndarray) -> np.ndarray:
        sums = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
        return (sums[hi] - sums[lo]) / n

    def rmse(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(mean((predicted - actual) ** 2), 0.0))

    out: dict[str, np.ndarray] = {"minutes": n}
    if kind == "regression":
        out["rmse"] = rmse(cols["actual"], cols["predicted"])
        out["baseline_rmse"] = rmse(cols["actual"], cols["baseline"])
    elif kind == "high_low":
        for prefix, high, low in (
            ("", cols["predicted_high"], cols["predicted_low"]),
            ("baseline_", cols["open"], cols["open"]),
        ):
            out[f"{prefix}rmse_high"] = rmse(cols["high"], high)
            out[f"{prefix}rmse_low"] = rmse(cols["low"], low)
            out[f"{prefix}rmse"] = (out[f"{prefix}rmse_high"] + out[f"{prefix}rmse_low"]) / 2
    else:
        label, base = cols["label"], cols["baseline"]
        out["accuracy"] = mean((cols["predicted"] == label).astype(np.float64))
        out["roc_auc"] = SlidingAuc(label, cols["probability_up"]).over(lo, hi)
        out["baseline_accuracy"] = mean((base == label).astype(np.float64))
        positives = mean(label) * n
        hits_up = mean(((label == 1) & (base == 1)).astype(np.float64)) * n  # positives scored 1
        hits_down = mean(((label == 0) & (base == 0)).astype(np.float64)) * n  # negatives scored 0
        negatives = n - positives
        pairs = positives * negatives
        won = hits_up * hits_down + 0.5 * (
            hits_up * (negatives - hits_down) + (positives - hits_up) * hits_down
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            out["baseline_roc_auc"] = np.where(np.round(pairs) > 0, won / np.where(pairs > 0, pairs, 1), 0.5)
    return out


class SlidingAuc:
    """roc_auc of windows [lo, hi) sliding forward over one (label, score) sequence.

    Keeps the window's positive and negative scores sorted and twice the Mann-Whitney count (pairs a
    positive wins, ties counting half): an element entering or leaving changes it by its own pairs, found
    by bisection. Equal to training.metrics.roc_auc (ranks with ties averaged), 0.5 when a class is absent.
    """

    def __init__(self, label: np.ndarray, score: np.ndarray) -> None:
        self.label = (np.asarray(label) == 1).tolist()
        self.score = np.asarray(score, dtype=np.float64).tolist()
        self.pos: list[float] = []
        self.neg: list[float] = []
        self.twice = 0  # 2 x (pairs won by the positive + half the ties)

    def _pairs(self, index: int) -> int:
        s = self.score[index]
        other = self.neg if self.label[index] else self.pos
        below, upto = bisect_left(other, s), bisect_right(other, s)
        won = below if self.label[index] else len(other) - upto
        return 2 * won + (upto - below)

    def _add(self, index: int) -> None:
        self.twice += self._pairs(index)
        insort(self.pos if self.label[index] else self.neg, self.score[index])

    def _remove(self, index: int) -> None:
        own = self.pos if self.label[index] else self.neg
        del own[bisect_left(own, self.score[index])]
        self.twice -= self._pairs(index)

    def over(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        out = np.empty(len(lo), dtype=np.float64)
        start = end = 0
        for i, (low, high) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
            if low >= end:  # no overlap with the previous window: start afresh
                self.pos, self.neg, self.twice, start, end = [], [], 0, low, low
            while end < high:
                self._add(end)
                end += 1
            while start < low:
                self._remove(start)
                start += 1
            pairs = len(self.pos) * len(self.neg)
            out[i] = self.twice / (2 * pairs) if pairs else 0.5
        return out
