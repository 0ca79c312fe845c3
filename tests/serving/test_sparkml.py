"""Parity: the numpy evaluation of each registered Spark pipeline against Spark's own `transform`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving import sparkml, stages
from serving.errors import UnsupportedModel
from serving.models import Registry
from tests.serving.conftest import Template

ROWS = 10_000
TS_MIN, TS_MAX = 1230768000.0, 4102444800.0


def edge_rows(rng: np.random.Generator, thresholds: dict[str, np.ndarray]) -> pd.DataFrame:
    """Random minutes plus edges: zero volume, huge prices, values exactly on (and beside) split points."""
    n = ROWS
    price = np.concatenate(
        [rng.uniform(0, 200, n // 2), 10 ** rng.uniform(-3, 12, n // 2 - 40), [0.0] * 10, [1e12, 1e15] * 15]
    )
    volume = np.where(rng.uniform(size=len(price)) < 0.25, 0.0, 10 ** rng.uniform(-4, 9, len(price)))
    frame = pd.DataFrame(
        {
            "Timestamp": rng.uniform(TS_MIN, TS_MAX, len(price)),
            "Open": price,
            "Close": price * rng.uniform(0.9, 1.1, len(price)),
            "Volume": volume,
        }
    )
    edges = []
    for column, values in thresholds.items():
        for t in values:
            for v in (t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)):
                row = frame.iloc[len(edges) % n].to_dict()
                row[column] = max(v, 0.0)
                edges.append(row)
    edges.append({"Timestamp": TS_MIN, "Open": 0.0, "Close": 0.0, "Volume": 0.0})
    edges.append({"Timestamp": TS_MAX, "Open": 1e15, "Close": 1e15, "Volume": 1e12})
    return pd.concat([frame, pd.DataFrame(edges)], ignore_index=True)


def assert_row_path_matches(
    pipeline: sparkml.Pipeline,
    frame: pd.DataFrame,
    inputs: list[str],
    batch: dict[str, np.ndarray],
    outputs: list[str],
) -> None:
    """The one-row path (plain floats, used for single requests) gives the batch path's answers."""
    for i, values in enumerate(frame[inputs].itertuples(index=False)):
        row = pipeline.transform_row(dict(zip(inputs, map(float, values), strict=True)))
        for name in outputs:
            expected = batch[name][i]
            if name == "probability":  # libm's exp and numpy's may differ in the last bit
                np.testing.assert_allclose(row[name], expected, rtol=0, atol=1e-15)
            else:
                assert np.array_equal(np.asarray(row[name]), expected), (name, i, row[name], expected)


def numpy_pipeline(template: Template, key: str, tmp_path: Path) -> sparkml.Pipeline:
    """The version as the gateway gets it: downloaded from the registry, read from its files."""
    name = {"close": "btc-close", "high_low": "btc-high-low", "trend": "btc-trend"}[key]
    registry = Registry(f"sqlite:///{template.root / 'mlflow.db'}")
    return sparkml.load(registry.download(name, template.versions[key], tmp_path / key))


def spark_transform(template: Template, kind: str, frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    spark = template.spark
    out = template.models[kind].transform(spark.createDataFrame(frame.astype("float64")))
    selected = [
        vector_to_array(F.col(c)).alias(c) if c in ("probability", "prediction_vec") else F.col(c)
        for c in columns
    ]
    return out.select(*selected).toPandas()


def forest_thresholds(pipeline: sparkml.Pipeline, features: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {f: [] for f in features}
    for stage in pipeline.stages:
        if isinstance(stage, stages.Forest):
            inner = stage.left != np.arange(len(stage.left))
            for j, f in enumerate(features):
                out[f].extend(stage.threshold[inner & (stage.feature == j)].tolist())
    return {f: np.unique(v) for f, v in out.items()}


def test_high_low_parity(template: Template, tmp_path: Path) -> None:
    ours = numpy_pipeline(template, "high_low", tmp_path)
    thresholds = forest_thresholds(ours, ["Open", "Volume"])
    assert sum(len(v) for v in thresholds.values()) > 20
    frame = edge_rows(np.random.default_rng(1), thresholds)
    assert len(frame) >= ROWS
    cols = ours.transform({c: frame[c].to_numpy() for c in ("Open", "Volume")})
    spark = spark_transform(template, "high_low", frame, ["prediction_high", "prediction_low"])
    spark_vector = template.models["high_low"].transform(
        template.spark.createDataFrame(frame.head(50).astype("float64"))
    )
    for name in (
        "prediction_high",
        "prediction_low",
    ):  # the forests' sums and the candle's arithmetic, bit for bit
        np.testing.assert_array_equal(cols[name], spark[name].to_numpy())
    # a coherent candle for every input, in Spark's answers and ours
    for high, low in (
        (cols["prediction_high"], cols["prediction_low"]),
        (spark.prediction_high, spark.prediction_low),
    ):
        assert (high >= frame.Open).all() and (frame.Open >= low).all() and (low >= 0).all()
    final = np.array([r["prediction"].toArray() for r in spark_vector.select("prediction").collect()])
    np.testing.assert_array_equal(cols["prediction"][:50], final)
    assert_row_path_matches(
        ours, frame, ["Open", "Volume"], cols, ["prediction_high", "prediction_low", "prediction"]
    )


def test_every_high_low_answer_is_a_coherent_candle(template: Template, tmp_path: Path) -> None:
    """High >= Open >= Low >= 0 for any Open and Volume the gateway accepts, by both evaluation paths."""
    ours = numpy_pipeline(template, "high_low", tmp_path)
    value = st.floats(min_value=0.0, max_value=1e15, allow_nan=False, allow_infinity=False)

    @settings(max_examples=500, deadline=None)
    @given(open_=value, volume=value, more=st.lists(st.tuples(value, value), min_size=1, max_size=20))
    def check(open_: float, volume: float, more: list[tuple[float, float]]) -> None:
        row = ours.transform_row({"Open": open_, "Volume": volume})
        assert row["prediction_high"] >= open_ >= row["prediction_low"] >= 0.0
        opens, volumes = (np.asarray(c, dtype=np.float64) for c in zip(*more, strict=True))
        cols = ours.transform({"Open": opens, "Volume": volumes})
        high, low = cols["prediction_high"], cols["prediction_low"]
        assert (high >= opens).all() and (opens >= low).all() and (low >= 0).all()

    check()


def test_a_candle_of_another_statement_is_refused(template: Template, tmp_path: Path) -> None:
    """A SQLTransformer is arbitrary SQL: the numpy engine evaluates training's statement and nothing else."""
    registry = Registry(f"sqlite:///{template.root / 'mlflow.db'}")
    model = registry.download("btc-high-low", template.versions["high_low"], tmp_path / "hl")
    sparkml.load(model)  # training's own pipeline loads
    (meta,) = (sparkml.spark_model_dir(model) / "stages").glob("3_*/metadata/part-*")
    record = json.loads(meta.read_text())
    assert record["class"] == "org.apache.spark.ml.feature.SQLTransformer"
    record["paramMap"]["statement"] = record["paramMap"]["statement"].replace("GREATEST", "LEAST")
    meta.write_text(json.dumps(record) + "\n")
    with pytest.raises(UnsupportedModel, match="not high_low's candle"):
        sparkml.load(model)


def test_close_parity(template: Template, tmp_path: Path) -> None:
    ours = numpy_pipeline(template, "close", tmp_path)
    frame = edge_rows(np.random.default_rng(2), {})
    cols = ours.transform({"Timestamp": frame["Timestamp"].to_numpy()})
    spark = spark_transform(template, "close", frame, ["prediction"])
    np.testing.assert_allclose(cols["prediction"], spark["prediction"].to_numpy(), rtol=1e-9, atol=0)
    assert_row_path_matches(ours, frame, ["Timestamp"], cols, ["prediction"])


def test_trend_parity(template: Template, tmp_path: Path) -> None:
    ours = numpy_pipeline(template, "trend", tmp_path)
    frame = edge_rows(np.random.default_rng(3), {})
    # rows on the decision boundary's neighbourhood too: Close moved until the margin is about 0
    logistic = ours.stages[1]
    assert isinstance(logistic, stages.Logistic)
    w = logistic.coefficients
    near = frame.head(200).copy()
    near["Close"] = -(logistic.intercept + w[0] * near["Open"] + w[2] * near["Volume"]) / w[1]
    frame = pd.concat([frame, near[near["Close"] >= 0]], ignore_index=True)
    cols = ours.transform({c: frame[c].to_numpy() for c in ("Open", "Close", "Volume")})
    spark = spark_transform(template, "trend", frame, ["prediction", "probability"])
    assert np.array_equal(cols["prediction"], spark["prediction"].to_numpy())
    probability = np.stack(spark["probability"].to_numpy())
    np.testing.assert_allclose(cols["probability"], probability, rtol=0, atol=1e-12)
    assert 0 < cols["prediction"].sum() < len(frame)  # both labels occur
    assert_row_path_matches(ours, frame, ["Open", "Close", "Volume"], cols, ["prediction", "probability"])


def test_unknown_stage_is_refused_naming_it(template: Template) -> None:
    with pytest.raises(UnsupportedModel, match="GeneralizedLinearRegressionModel"):
        sparkml.load(template.root / "broken-close-model")


def test_spark_vector_and_matrix_structs() -> None:
    sparse = {"type": 0, "size": 4, "indices": [1, 3], "values": [2.0, 5.0]}
    assert sparkml._vector(sparse).tolist() == [0.0, 2.0, 0.0, 5.0]
    dense_cols = {
        "type": 1,
        "numRows": 2,
        "numCols": 2,
        "colPtrs": None,
        "rowIndices": None,
        "values": [1.0, 2.0, 3.0, 4.0],
        "isTransposed": False,
    }
    assert sparkml._matrix(dense_cols).tolist() == [[1.0, 3.0], [2.0, 4.0]]
    assert sparkml._matrix({**dense_cols, "isTransposed": True}).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    csc = {
        "type": 0,
        "numRows": 2,
        "numCols": 2,
        "colPtrs": [0, 1, 2],
        "rowIndices": [1, 0],
        "values": [7.0, 8.0],
        "isTransposed": False,
    }
    assert sparkml._matrix(csc).tolist() == [[0.0, 8.0], [7.0, 0.0]]
