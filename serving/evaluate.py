"""Evaluating a loaded model version: numpy over the Spark files (no JVM), or MLflow's Spark flavour.

An evaluator answers `prediction` (and `probability` for a classifier) per row for input columns of equal
length, and says which input columns it reads when it knows (serving.specs checks them at load).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serving import sparkml


class Evaluator(Protocol):
    inputs: list[str] | None  # the input columns the model reads; None when the engine cannot tell

    def outputs(self, columns: dict[str, Sequence[float]]) -> dict[str, list[Any]]:
        """`prediction` (and `probability` for a classifier) per row, for input columns of equal length."""
        ...


class NumpyEvaluator:
    """The Spark pipeline read from its files, evaluated in-process: floats for one row, numpy for many."""

    def __init__(self, model_dir: Path) -> None:
        self.pipeline = sparkml.load(model_dir)
        self.inputs: list[str] | None = self.pipeline.input_columns()

    def outputs(self, columns: dict[str, Sequence[float]]) -> dict[str, list[Any]]:
        wanted = ("prediction", "probability")
        if all(len(v) == 1 for v in columns.values()):
            row = self.pipeline.transform_row({k: float(v[0]) for k, v in columns.items()})
            return {c: [row[c]] for c in wanted if c in row}
        cols = self.pipeline.transform({k: np.asarray(v, dtype=np.float64) for k, v in columns.items()})
        return {c: cols[c].tolist() for c in wanted if c in cols}


class SparkEvaluator:
    """MLflow's Spark flavour: the real PipelineModel in a local JVM (imports pyspark only here)."""

    inputs: list[str] | None = None  # the probe at load finds a column the pipeline lacks

    def __init__(self, model_uri: str, tracking_uri: str) -> None:
        import mlflow.spark
        from pyspark.sql import SparkSession

        from core import jvm, logs

        builder = (
            SparkSession.builder.master("local[1]")
            .config("spark.driver.extraJavaOptions", jvm.with_extra_options(""))
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")  # a bar per request is no log line
        )
        with logs.jvm_output(logs.jvm_log_dir_from_env()):  # the JVM's launch noise off the gateway's log
            self.spark = builder.getOrCreate()
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.model = mlflow.spark.load_model(model_uri)

    def outputs(self, columns: dict[str, Sequence[float]]) -> dict[str, list[Any]]:
        import pandas as pd

        frame = self.spark.createDataFrame(
            pd.DataFrame({k: [float(x) for x in v] for k, v in columns.items()})
        )
        result = self.model.transform(frame)
        wanted = [c for c in ("prediction", "probability") if c in result.columns]
        rows = result.select(*wanted).collect()
        return {
            c: [r[c].toArray().tolist() if hasattr(r[c], "toArray") else r[c] for r in rows] for c in wanted
        }


def forbid_jvm_imports() -> None:
    """Make `import pyspark` / `import py4j` fail in this process, as if pyspark were not installed.

    `import mlflow` tries `import pyspark` at module level (only to know whether it may use Spark types);
    the numpy engine's process needs neither, so its entry point calls this before anything imports
    mlflow. Only for a dedicated gateway process: never inside a test run that also fits Spark models.
    """
    for name in ("pyspark", "py4j"):
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # the documented "not importable" marker
