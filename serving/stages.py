"""The numpy twins of the Spark ML stages training builds, applied to a batch of columns or to one row.

Each stage reproduces Spark's own arithmetic in Spark's order (sequential dot products, trees summed tree by
tree), so answers match `transform` to the last bits rather than merely approximately. `serving.sparkml`
builds them from a persisted PipelineModel; each says which columns it reads and writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Columns = dict[str, np.ndarray]  # a batch: column name -> (n,) doubles or (n, k) vectors
Row = dict[str, Any]  # one row: column name -> float or list of floats (a vector)


def _dot(x: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """Spark's BLAS.dot, feature by feature from the left, so sums round exactly as the JVM rounds them."""
    acc = np.zeros(x.shape[0], dtype=np.float64)
    for j, c in enumerate(coefficients):
        acc = acc + x[:, j] * c
    return acc


def _dot_row(x: list[float], coefficients: np.ndarray) -> float:
    """`_dot` for one row, in the same order: Python floats are the same IEEE doubles."""
    acc = 0.0
    for xj, c in zip(x, coefficients.tolist(), strict=True):
        acc += xj * c
    return acc


@dataclass(frozen=True)
class Assembler:
    """VectorAssembler: columns (scalars or vectors) side by side into one (n, k) array."""

    input_cols: list[str]
    output_col: str

    @property
    def reads(self) -> tuple[str, ...]:
        return tuple(self.input_cols)

    @property
    def writes(self) -> tuple[str, ...]:
        return (self.output_col,)

    def transform(self, cols: Columns) -> None:
        parts = [cols[c].reshape(len(cols[c]), -1) for c in self.input_cols]
        cols[self.output_col] = np.hstack(parts).astype(np.float64, copy=False)

    def transform_row(self, row: Row) -> None:
        out: list[float] = []
        for c in self.input_cols:
            value = row[c]
            if isinstance(value, list):
                out.extend(value)
            else:
                out.append(value)
        row[self.output_col] = out


@dataclass(frozen=True)
class Linear:
    """LinearRegressionModel: prediction = coefficients . x + intercept."""

    features_col: str
    prediction_col: str
    coefficients: np.ndarray
    intercept: float

    @property
    def reads(self) -> tuple[str, ...]:
        return (self.features_col,)

    @property
    def writes(self) -> tuple[str, ...]:
        return (self.prediction_col,)

    def transform(self, cols: Columns) -> None:
        cols[self.prediction_col] = _dot(cols[self.features_col], self.coefficients) + self.intercept

    def transform_row(self, row: Row) -> None:
        row[self.prediction_col] = _dot_row(row[self.features_col], self.coefficients) + self.intercept


@dataclass(frozen=True)
class Logistic:
    """Binary LogisticRegressionModel, with Spark's raw -> probability -> prediction steps."""

    features_col: str
    prediction_col: str
    probability_col: str
    raw_col: str
    coefficients: np.ndarray
    intercept: float
    threshold: float

    @property
    def reads(self) -> tuple[str, ...]:
        return (self.features_col,)

    @property
    def writes(self) -> tuple[str, ...]:
        return (self.prediction_col, self.probability_col, self.raw_col)

    def transform(self, cols: Columns) -> None:
        margin = _dot(cols[self.features_col], self.coefficients) + self.intercept
        raw = np.column_stack([-margin, margin])
        # as Spark: p0 = 1/(1+exp(-raw0)), p1 = 1 - p0 (1/(1+exp(-margin)) can differ in the last bit)
        with np.errstate(over="ignore"):
            p0 = 1.0 / (1.0 + np.exp(-raw[:, 0]))
        probability = np.column_stack([p0, 1.0 - p0])
        if self.raw_col:
            prediction = (raw[:, 1] > self.raw_threshold).astype(np.float64)
            cols[self.raw_col] = raw
        else:
            prediction = (probability[:, 1] > self.threshold).astype(np.float64)
        if self.probability_col:
            cols[self.probability_col] = probability
        cols[self.prediction_col] = prediction

    def transform_row(self, row: Row) -> None:
        margin = _dot_row(row[self.features_col], self.coefficients) + self.intercept
        try:
            math.exp(margin)  # exp(-raw0), raw0 = -margin: raises where it overflows
        except OverflowError:  # the JVM's exp gives Infinity here, so p0 = 0
            p0 = 0.0
        else:  # numpy's exp, as `transform`: math.exp rounds ~4% of results differently in the last bit
            p0 = 1.0 / (1.0 + float(np.exp(margin)))
        probability = [p0, 1.0 - p0]
        if self.raw_col:
            row[self.raw_col] = [-margin, margin]
            prediction = 1.0 if margin > self.raw_threshold else 0.0
        else:
            prediction = 1.0 if probability[1] > self.threshold else 0.0
        if self.probability_col:
            row[self.probability_col] = probability
        row[self.prediction_col] = prediction

    @property
    def raw_threshold(self) -> float:
        t = self.threshold
        return -math.inf if t == 0.0 else math.inf if t == 1.0 else math.log(t / (1.0 - t))


@dataclass(frozen=True)
class Forest:
    """RandomForestRegressionModel: every tree's nodes in flat arrays, walked for all rows and trees at once.

    A leaf points to itself on both sides, so `depth` steps of "left if x[feature] <= threshold else right"
    bring every (row, tree) pair to its leaf, as Spark's `predictImpl` does one row at a time.
    """

    features_col: str
    prediction_col: str
    roots: np.ndarray  # (trees,) index of each tree's root in the flat arrays
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    depth: int
    nodes: tuple[tuple[int, float, int, int, float], ...] = ()  # the same arrays as Python rows, for one row
    # [right, left] of each node side by side, so `2 * node + go_left` is the index of the next node
    children: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def reads(self) -> tuple[str, ...]:
        return (self.features_col,)

    @property
    def writes(self) -> tuple[str, ...]:
        return (self.prediction_col,)

    def transform_row(self, row: Row) -> None:
        x = row[self.features_col]
        nodes = self.nodes
        total = 0.0
        for root in self.roots.tolist():
            node = root
            for _ in range(self.depth + 1):  # a leaf loops onto itself
                feature, threshold, left, right, value = nodes[node]
                if left == node:
                    break
                node = left if x[feature] <= threshold else right
            total += value
        row[self.prediction_col] = total / len(self.roots)

    def transform(self, cols: Columns) -> None:
        x = np.ascontiguousarray(cols[self.features_col], dtype=np.float64)
        n, k = x.shape
        values = x.ravel()
        row_start = (np.arange(n, dtype=np.int64) * k)[:, None]
        children = self.children
        node = np.tile(self.roots, (n, 1))  # (rows, trees)
        for _ in range(self.depth):  # flat 1-D gathers only: far cheaper than 2-D fancy indexing
            go_left = values[row_start + self.feature[node]] <= self.threshold[node]
            node = children[2 * node + go_left]
        leaves = self.value[node]
        total = np.zeros(n, dtype=np.float64)
        for t in range(leaves.shape[1]):  # Spark sums tree by tree, then divides by the number of trees
            total = total + leaves[:, t]
        cols[self.prediction_col] = total / len(self.roots)


@dataclass(frozen=True)
class Candle:
    """high_low's SQLTransformer (training.specs.CANDLE): predicted spreads back to a High and a Low.

    High = Open + Open * max(high_spread, 0), Low = Open - Open * min(max(low_spread, 0), 1), with Spark
    SQL's GREATEST (NaN above every number, like np.maximum) and LEAST (NaN above every number, so
    LEAST(NaN, 1) is 1, like np.fmin). A multiply and an add, no rounding of our own: equal to Spark's bits.
    """

    open_col: str = "Open"
    spread_cols: tuple[str, str] = ("prediction_high_spread", "prediction_low_spread")
    output_cols: tuple[str, str] = ("prediction_high", "prediction_low")

    @property
    def reads(self) -> tuple[str, ...]:
        return (self.open_col, *self.spread_cols)

    @property
    def writes(self) -> tuple[str, ...]:
        return self.output_cols

    def transform(self, cols: Columns) -> None:
        o = cols[self.open_col]
        up, down = (cols[c] for c in self.spread_cols)
        cols[self.output_cols[0]] = o + o * np.maximum(up, 0.0)
        cols[self.output_cols[1]] = o - o * np.fmin(np.maximum(down, 0.0), 1.0)

    def transform_row(self, row: Row) -> None:
        o = row[self.open_col]
        up, down = (row[c] for c in self.spread_cols)
        up = up if math.isnan(up) or up > 0.0 else 0.0
        down = down if math.isnan(down) or down > 0.0 else 0.0
        down = down if down < 1.0 else 1.0  # NaN compares false: LEAST(NaN, 1) is 1
        row[self.output_cols[0]] = o + o * up
        row[self.output_cols[1]] = o - o * down


Stage = Assembler | Linear | Logistic | Forest | Candle
