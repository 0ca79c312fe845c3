"""Spark ML pipelines read from their persisted files into numpy stages (serving.stages): no JVM on the
request path.

MLflow's Spark flavour stores a fitted `PipelineModel` as Spark ML writes it: `metadata/part-*` (one JSON
line: class, uid, paramMap, defaultParamMap) and `stages/<i>_<uid>/{metadata,data}` with Parquet data. We
read those with json + pyarrow once per model version; the stages then answer whole batches with a few
array operations. A stage class we do not know is refused when the version loads, never at request time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from serving.errors import UnsupportedModel
from serving.stages import Assembler, Candle, Columns, Forest, Linear, Logistic, Row, Stage
from training.specs import CANDLE  # plain data: the one SQL statement training builds


def _metadata(stage_dir: Path) -> dict[str, Any]:
    parts = sorted((stage_dir / "metadata").glob("part-*"))
    if not parts:
        raise UnsupportedModel(f"{stage_dir}: no metadata/part-* file (not a Spark ML model directory)")
    return json.loads(parts[0].read_text().splitlines()[0])


def _param(meta: dict[str, Any], name: str, default: Any = None) -> Any:
    """A param as Spark resolves it: the explicit value, else the persisted default."""
    if name in meta.get("paramMap", {}):
        return meta["paramMap"][name]
    return meta.get("defaultParamMap", {}).get(name, default)


def _data_rows(stage_dir: Path, sub: str = "data") -> list[dict[str, Any]]:
    files = sorted((stage_dir / sub).glob("*.parquet"))
    if not files:
        raise UnsupportedModel(f"{stage_dir}: no {sub}/*.parquet")
    rows: list[dict[str, Any]] = []
    for f in files:
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def _vector(v: dict[str, Any]) -> np.ndarray:
    """Spark's VectorUDT struct: type 1 dense (values), type 0 sparse (size, indices, values)."""
    if v["type"] == 1:
        return np.asarray(v["values"], dtype=np.float64)
    out = np.zeros(v["size"], dtype=np.float64)
    out[np.asarray(v["indices"], dtype=np.int64)] = v["values"]
    return out


def _matrix(m: dict[str, Any]) -> np.ndarray:
    """Spark's MatrixUDT struct: dense column-major (row-major if transposed) or CSC (CSR if transposed)."""
    rows, cols, transposed = m["numRows"], m["numCols"], m["isTransposed"]
    values = np.asarray(m["values"], dtype=np.float64)
    if m["type"] == 1:
        return values.reshape(rows, cols) if transposed else values.reshape(cols, rows).T
    out = np.zeros((rows, cols), dtype=np.float64)
    ptrs, idx = m["colPtrs"], m["rowIndices"]
    for major in range(len(ptrs) - 1):
        for k in range(ptrs[major], ptrs[major + 1]):
            if transposed:
                out[major, idx[k]] = values[k]
            else:
                out[idx[k], major] = values[k]
    return out


def _forest(stage_dir: Path, meta: dict[str, Any]) -> Forest:
    records = _data_rows(stage_dir)
    trees = sorted({r["treeID"] for r in records})
    by_tree: dict[int, list[dict[str, Any]]] = {t: [] for t in trees}
    for r in records:
        by_tree[r["treeID"]].append(r["nodeData"])
    feature: list[int] = []
    left: list[int] = []
    right: list[int] = []
    roots: list[int] = []
    threshold: list[float] = []
    value: list[float] = []
    for t in trees:
        tree = sorted(by_tree[t], key=lambda n: n["id"])
        if [n["id"] for n in tree] != list(range(len(tree))):
            raise UnsupportedModel(f"{stage_dir.name}: tree {t} node ids are not 0..n-1")
        base = len(value)
        roots.append(base)
        for n in tree:
            value.append(n["prediction"])
            if n["leftChild"] < 0:  # a leaf: loop onto itself
                feature.append(0)
                threshold.append(0.0)
                left.append(base + n["id"])
                right.append(base + n["id"])
                continue
            split = n["split"]
            if split["numCategories"] != -1:
                raise UnsupportedModel(f"{stage_dir.name}: categorical split in tree {t} is not supported")
            feature.append(split["featureIndex"])
            threshold.append(split["leftCategoriesOrThreshold"][0])
            left.append(base + n["leftChild"])
            right.append(base + n["rightChild"])
    forest = Forest(
        features_col=_param(meta, "featuresCol", "features"),
        prediction_col=_param(meta, "predictionCol", "prediction"),
        roots=np.asarray(roots, dtype=np.int64),
        feature=np.asarray(feature, dtype=np.int64),
        threshold=np.asarray(threshold, dtype=np.float64),
        left=np.asarray(left, dtype=np.int64),
        right=np.asarray(right, dtype=np.int64),
        value=np.asarray(value, dtype=np.float64),
        depth=0,
    )
    nodes = tuple(zip(feature, threshold, left, right, value, strict=True))
    children = np.column_stack([forest.right, forest.left]).ravel()
    return Forest(**{**forest.__dict__, "depth": _depth(forest), "nodes": nodes, "children": children})


def _depth(forest: Forest) -> int:
    """Steps from the roots until every path has reached a leaf (bounded by the node count)."""
    frontier = forest.roots
    for depth in range(len(forest.value) + 1):
        inner = frontier[forest.left[frontier] != frontier]
        if inner.size == 0:
            return depth
        frontier = np.concatenate([forest.left[inner], forest.right[inner]])
    raise UnsupportedModel("tree has a cycle")


def _assembler(stage_dir: Path, meta: dict[str, Any]) -> Assembler:
    return Assembler(list(_param(meta, "inputCols")), _param(meta, "outputCol"))


def _linear(stage_dir: Path, meta: dict[str, Any]) -> Linear:
    (row,) = _data_rows(stage_dir)
    return Linear(
        features_col=_param(meta, "featuresCol", "features"),
        prediction_col=_param(meta, "predictionCol", "prediction"),
        coefficients=_vector(row["coefficients"]),
        intercept=float(row["intercept"]),
    )


def _logistic(stage_dir: Path, meta: dict[str, Any]) -> Logistic:
    (row,) = _data_rows(stage_dir)
    if row.get("isMultinomial") or row.get("numClasses", 2) != 2:
        raise UnsupportedModel(f"{stage_dir.name}: only binary logistic regression is supported")
    thresholds = _param(meta, "thresholds")
    if thresholds:  # Spark's getThreshold for a binary model given thresholds
        threshold = 1.0 / (1.0 + thresholds[0] / thresholds[1])
    else:
        threshold = float(_param(meta, "threshold", 0.5))
    return Logistic(
        features_col=_param(meta, "featuresCol", "features"),
        prediction_col=_param(meta, "predictionCol", "prediction"),
        probability_col=_param(meta, "probabilityCol", "probability"),
        raw_col=_param(meta, "rawPredictionCol", "rawPrediction"),
        coefficients=_matrix(row["coefficientMatrix"])[0],
        intercept=float(_vector(row["interceptVector"])[0]),
        threshold=threshold,
    )


def _sql(stage_dir: Path, meta: dict[str, Any]) -> Candle:
    """A SQLTransformer is arbitrary SQL: only the exact statement training builds has a numpy twin."""
    statement = " ".join(str(_param(meta, "statement", "")).split())
    if statement != CANDLE:
        raise UnsupportedModel(
            f"{stage_dir.name}: SQLTransformer statement {statement!r} is not high_low's candle "
            "(training.specs.CANDLE), the only one the numpy engine evaluates"
        )
    return Candle()


READERS: dict[str, Callable[[Path, dict[str, Any]], Stage]] = {
    "org.apache.spark.ml.feature.VectorAssembler": _assembler,
    "org.apache.spark.ml.regression.LinearRegressionModel": _linear,
    "org.apache.spark.ml.classification.LogisticRegressionModel": _logistic,
    "org.apache.spark.ml.regression.RandomForestRegressionModel": _forest,
    "org.apache.spark.ml.feature.SQLTransformer": _sql,
}


@dataclass(frozen=True)
class Pipeline:
    """A fitted PipelineModel as numpy stages, applied in order to a batch of columns."""

    uid: str
    stages: tuple[Stage, ...]

    def transform(self, columns: Columns) -> Columns:
        cols = dict(columns)
        for stage in self.stages:
            stage.transform(cols)
        return cols

    def transform_row(self, values: Row) -> Row:
        """One row without numpy: a single request costs microseconds, not a dozen array calls per stage."""
        row = dict(values)
        for stage in self.stages:
            stage.transform_row(row)
        return row

    def input_columns(self) -> list[str]:
        """The columns a caller must give: those a stage reads that no stage before it writes."""
        written: set[str] = set()
        needed: list[str] = []
        for stage in self.stages:
            needed += [c for c in stage.reads if c not in written and c not in needed]
            written.update(stage.writes)
        return needed


def spark_model_dir(model_dir: Path) -> Path:
    """The PipelineModel directory inside an MLflow model (`flavors.spark.model_data`, usually `sparkml`)."""
    if (model_dir / "metadata").is_dir():
        return model_dir
    mlmodel = model_dir / "MLmodel"
    if mlmodel.is_file():
        import yaml  # MLflow's own dependency; MLmodel is YAML

        flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
        if "spark" not in flavors:
            raise UnsupportedModel(f"{model_dir}: MLflow model has no spark flavour ({', '.join(flavors)})")
        return model_dir / flavors["spark"].get("model_data", "sparkml")
    return model_dir / "sparkml"


def load(model_dir: Path) -> Pipeline:
    """Read a persisted PipelineModel; refuse any stage class without a numpy twin, naming it."""
    root = spark_model_dir(Path(model_dir))
    meta = _metadata(root)
    if meta.get("class") != "org.apache.spark.ml.PipelineModel":
        raise UnsupportedModel(f"{root}: expected a PipelineModel, found {meta.get('class')}")
    uids = meta["paramMap"]["stageUids"]
    stages: list[Stage] = []
    for i, uid in enumerate(uids):
        stage_dir = root / "stages" / f"{i}_{uid}"
        stage_meta = _metadata(stage_dir)
        reader = READERS.get(stage_meta["class"])
        if reader is None:
            raise UnsupportedModel(
                f"stage {i} ({uid}) is {stage_meta['class']}, which the numpy engine cannot evaluate; "
                "serve this model with BTCFLOW_SERVING_ENGINE=spark"
            )
        stages.append(reader(stage_dir, stage_meta))
    return Pipeline(uid=meta["uid"], stages=tuple(stages))
