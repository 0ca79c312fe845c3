"""What one training run records in MLflow beside its metrics: the estimators' params, the model's
signature and pinned requirements, the training rows as an input, and the run itself, nested under
`mlflow run`'s when there is one. MLflow and pyspark are imported where used, as in training.train.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pandas as pd

from training.specs import ModelSpec

if TYPE_CHECKING:
    from mlflow import ActiveRun
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame


def estimator_params(spec: ModelSpec, model: PipelineModel) -> dict[str, Any]:
    """Every param of each fitted estimator stage, as Spark resolved it.

    high_low fits two forests that may differ: each one's params get a prefix (high_, low_) so the
    run records both, not only the first.
    """
    if spec.kind != "high_low":
        return {p.name: v for p, v in model.stages[1].extractParamMap().items()}
    return {
        f"{label.lower()}_{p.name}": v
        for label, stage in zip(spec.labels, model.stages[1:3], strict=True)
        for p, v in stage.extractParamMap().items()
    }


def importances(spec: ModelSpec, model: PipelineModel) -> dict[str, list[float]]:
    if spec.kind != "high_low":
        return {}
    return {
        label: list(stage.featureImportances.toArray())  # type: ignore[attr-defined]
        for label, stage in zip(spec.labels, model.stages[1:3], strict=True)
    }


def signature(spec: ModelSpec):  # noqa: ANN201 - mlflow type
    """Inputs: the feature columns as doubles. Output: `prediction`, a [high, low] vector for high_low."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, SparkMLVector

    inputs = Schema([ColSpec("double", name) for name in spec.features])
    output = SparkMLVector() if spec.kind == "high_low" else "double"
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec(output, "prediction")]))


def pip_requirements() -> list[str]:
    """Pinned explicitly: MLflow would otherwise reload the model in a subprocess to infer them."""
    import numpy
    import pyspark

    return [f"pyspark=={pyspark.__version__}", f"pandas=={pd.__version__}", f"numpy=={numpy.__version__}"]


def counted_dataset(df: DataFrame, path: str, name: str, digest: str, rows: int):  # noqa: ANN201 - mlflow type
    """MLflow's SparkDataset of the training rows, with the row count we already have as its profile.

    SparkDataset.profile counts rows itself through Python workers (`df.rdd`), up to its 5 s timeout a
    run: about 40 s of a 7M-row demo's nine runs spent counting rows counted before the fit.
    """
    from mlflow.data.spark_dataset import SparkDataset, from_spark

    class Counted(SparkDataset):
        @property
        def profile(self) -> dict[str, int]:
            return {"approx_count": rows}

    made = from_spark(df, path=path, name=name, digest=digest)
    return Counted(df=made.df, source=made.source, name=made.name, digest=made.digest)


@contextmanager
def nested_run(run_name: str, tags: dict[str, str]) -> Iterator[ActiveRun]:
    """A new run, nested under `mlflow run`'s own run when MLFLOW_RUN_ID names one.

    MLflow would resume the run MLFLOW_RUN_ID names instead of starting ours, and its end_run()
    deletes the variable; so it is taken out for our run and put back whatever happens: a failed
    run must not leave the process (the next model, the watch loop) without its parent.
    """
    import mlflow

    parent = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        with mlflow.start_run(run_name=run_name, tags=tags, parent_run_id=parent) as run:
            yield run
    finally:
        if parent is not None:
            os.environ["MLFLOW_RUN_ID"] = parent
