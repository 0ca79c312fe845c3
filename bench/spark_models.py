"""Small real Spark ML pipelines of the three shapes in models.md, logged and promoted in an MLflow store.

Fixture code for bench/serve.py, bench/monitor.py and the serving tests: the gateway never imports this
(it needs pyspark).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.dataset import COLUMNS
from core.registry import PRODUCTION_ALIAS, PRODUCTION_STAGE
from training.specs import SPECS

REGISTERED = {kind: spec.registered_name for kind, spec in SPECS.items()}
FEATURES = {kind: list(spec.features) for kind, spec in SPECS.items()}
KAGGLE = list(COLUMNS)


def spark_session():
    """One local[1] session: the machine is shared, and small models need no parallelism."""
    from pyspark.sql import SparkSession

    from core import jvm

    return (
        SparkSession.builder.master("local[1]")
        .appName("btcflow-serving-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.driver.memory", "1g")
        .config("spark.driver.extraJavaOptions", jvm.with_extra_options(""))
        .getOrCreate()
    )


def synthetic_minutes(rows: int, seed: int = 0) -> pd.DataFrame:
    """A Kaggle-shaped random walk with some zero-volume minutes, enough to grow non-trivial trees."""
    rng = np.random.default_rng(seed)
    ts = 1325412060.0 + 60.0 * np.arange(rows)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, rows)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0, 0.003, rows)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread * rng.uniform(0.2, 1.0, rows)
    volume = np.where(rng.uniform(size=rows) < 0.2, 0.0, rng.exponential(3.0, rows))
    return pd.DataFrame(
        {"Timestamp": ts, "Open": open_, "High": high, "Low": low, "Close": close, "Volume": volume}
    )


def fit(spark, kind: str, frame: pd.DataFrame, **params):
    """Fit training's own pipeline of one model kind on Kaggle columns, labelled as training labels them."""
    from training.specs import build_pipeline
    from training.train import prepare

    spec = SPECS[kind]
    df = prepare(spec, spark.createDataFrame(frame[KAGGLE].astype("float64")))
    return build_pipeline(spec, {**spec.params, **params}).fit(df)


def log_and_register(model, kind: str, frame: pd.DataFrame, tracking_uri: str) -> str:
    """Log with MLflow's Spark flavour (training's signature) under experiment btcflow, register it."""
    import mlflow
    import mlflow.spark

    from training.runs import pip_requirements, signature

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    if mlflow.get_experiment_by_name("btcflow") is None:
        home = Path(tracking_uri[len("sqlite:///") :]).parent
        mlflow.create_experiment("btcflow", artifact_location=str(home / "artifacts"))
    mlflow.set_experiment("btcflow")
    with mlflow.start_run():
        info = mlflow.spark.log_model(
            model,
            artifact_path="model",
            registered_model_name=REGISTERED[kind],
            signature=signature(SPECS[kind]),
            input_example=frame[FEATURES[kind]].head(3),
            pip_requirements=pip_requirements(),
        )
    return str(info.registered_model_version)


def promote(tracking_uri: str, kind: str, version: str) -> None:
    """Stage Production (archiving the previous one) and alias production, as training's promotion does."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name = REGISTERED[kind]
    client.transition_model_version_stage(name, version, PRODUCTION_STAGE, archive_existing_versions=True)
    client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
