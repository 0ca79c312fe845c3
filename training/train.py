"""One tracked, registered MLflow run per model version: fit, judge honestly, record lineage.

`train_models` is the library entry point (CLI, MLproject, watch loop and `make demo` call it): it
reads each selection of batches once, cached, and fits every asked model on it.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.errors import BadInput
from core.progress import StageLine
from core.storage import LocalStorage
from training import data, metrics, plots
from training.data import Batch, Scheme
from training.runs import (
    counted_dataset,
    estimator_params,
    importances,
    nested_run,
    pip_requirements,
    signature,
)
from training.settings import TrainingSettings
from training.specs import ModelSpec, build_pipeline, get_spec, resolve_params
from training.tracking import connect

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("training")


@dataclass
class TrainResult:
    """What one training run produced; enough for the demo table and for promotion."""

    model: str
    registered_name: str
    version: str
    run_id: str
    batches: list[int]
    scheme: str
    train_rows: int
    test_rows: int
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # the whole version: split, fit, score, log and register
    fit_seconds: float = 0.0  # pipeline.fit alone

    @property
    def primary(self) -> tuple[str, float, float]:
        """(metric name, value, baseline value) of the model's primary metric."""
        spec = get_spec(self.model)
        key = spec.primary_metric
        return key, self.metrics[key], self.metrics[f"baseline_{key}"]


def describe_batches(numbers: list[int]) -> str:
    """`1-3` for a contiguous run, else `1,3`: short enough for run names and tables."""
    if len(numbers) > 1 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}-{numbers[-1]}"
    return ",".join(map(str, numbers))


def prepare(spec: ModelSpec, df: DataFrame) -> DataFrame:
    """The columns a model needs, with its derived labels: trend's next-minute label, high_low's spreads."""
    if spec.kind == "classification":
        return data.with_trend_label(df)
    if spec.kind == "high_low":
        return data.with_spreads(df)
    return df


def score(spec: ModelSpec, model: PipelineModel, df: DataFrame) -> pd.DataFrame:
    """The fitted model's outputs beside the inputs and targets, as pandas (via Arrow)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    out = model.transform(df)
    columns = [F.col(c) for c in ("Timestamp", *spec.features, *spec.labels) if c in df.columns]
    columns += [F.col("Open")] if "Open" not in spec.features else []
    if spec.kind == "high_low":
        columns += [F.col("prediction_high"), F.col("prediction_low")]
    else:
        columns.append(F.col("prediction"))
    if spec.kind == "classification":
        columns.append(vector_to_array(F.col("probability"))[1].alias("probability_up"))
    seen: set[str] = set()
    unique = [c for c in columns if not (str(c) in seen or seen.add(str(c)))]  # type: ignore[func-returns-value]
    return out.select(*unique).toPandas()


def first_value(df: DataFrame) -> float:
    """The first value of a one-row result (an aggregate); the caller guarantees rows exist."""
    row = df.first()
    assert row is not None, "an aggregate over a non-empty frame returns a row"
    return float(row[0])


def train_one(
    spark: SparkSession,
    settings: TrainingSettings,
    spec: ModelSpec,
    batches: list[Batch],
    base: DataFrame,
    scheme: Scheme,
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Fit one model on `base` (the selected batches), evaluate, log and register one version.

    `progress`: a live line on stderr (stage, seconds, rows) while it runs; else one INFO record a stage.
    """
    import mlflow
    from mlflow import MlflowClient

    started = time.monotonic()
    numbers = [b.batch for b in batches]
    params = resolve_params(spec, overrides)
    label = describe_batches(numbers)
    run_name = f"{spec.name}-{scheme}-b{label}"
    app_id = str(spark.sparkContext.applicationId)
    tags = {
        "btcflow.model": spec.name,
        "btcflow.scheme": scheme,
        "btcflow.batches": ",".join(map(str, numbers)),
        "btcflow.last_batch": str(numbers[-1]),
        "btcflow.spark_app_id": app_id,
        "btcflow.spark_master": str(spark.sparkContext.master),
        **data.lineage(batches),
    }
    df = prepare(spec, base)
    windowed = spec.kind == "classification"
    if windowed:  # the label needs a window over all rows: compute it once for split, fit and test
        df = df.cache()
    try:
        # The run is open from before the fit to after the logging, so its Duration is the training time;
        # a failure inside ends it FAILED (mlflow.start_run's context) and goes on up as it is.
        with nested_run(run_name, tags) as run, StageLine(progress, run_name, log=log) as line:
            line.stage("split")
            cutoff = data.time_cutoff(df, settings.test_fraction)
            horizon = data.LABEL_HORIZON if spec.kind == "classification" else 0.0
            train_df, test_df = data.time_split(df, cutoff, horizon)
            caps: dict[str, float] = {}
            if spec.kind == "high_low":  # bad prints: labels capped at the training rows' quantile
                train_df, caps = data.winsorise_spreads(train_df)
            train_rows = train_df.count()  # counted once, as before, but ahead of the fit: the line shows it
            line.stage("fit", train_rows)
            pipeline = build_pipeline(spec, params)
            fit_started = time.monotonic()
            model = pipeline.fit(train_df)
            fit_seconds = time.monotonic() - fit_started
            line.stage("score")
            test = score(spec, model, test_df)
            # the newest minute whose values training used (a label's minute too): the gate scores after it
            train_max_ts = first_value(train_df.agg({"Timestamp": "max"})) + horizon
            last_close = first_value(train_df.orderBy(train_df.Timestamp.desc()).select("Close"))
            positive_rate = 0.0
            if spec.kind == "classification":
                positive_rate = first_value(train_df.agg({"label": "avg"}))
            values = metrics.evaluate(spec, test)
            values |= metrics.baseline(spec, {"last_close": last_close, "positive_rate": positive_rate}, test)
            line.stage("log")
            known_now = {"btcflow.train_max_ts": repr(train_max_ts), "btcflow.test_min_ts": repr(cutoff)}
            mlflow.set_tags(known_now)
            tags |= known_now
            mlflow.log_params(
                {
                    "model": spec.name,
                    "features": ",".join(spec.features),
                    "label": ",".join(spec.labels),
                    "batches": label,
                    "scheme": scheme,
                    "train_rows": train_rows,
                    "test_rows": len(test),
                    "test_fraction": settings.test_fraction,
                    "spark_app_id": app_id,  # the tag's value as a param too: runs compare by it
                    **({"spread_quantile": data.SPREAD_QUANTILE} if caps else {}),
                    **{f"{name}_cap": cap for name, cap in caps.items()},
                    **estimator_params(spec, model),
                }
            )
            # the fit's own time (pipeline.fit only): logged beside the model's metrics, kept out of `values`
            rate = train_rows / max(fit_seconds, 1e-9)
            mlflow.log_metrics({**values, "fit_seconds": fit_seconds, "train_rows_per_s": rate})
            digest = ",".join(b.sha256[:8] for b in batches)[:36]
            dataset = counted_dataset(
                train_df, settings.batch_storage().url(""), f"batches-{label}", digest, train_rows
            )
            mlflow.log_input(dataset, context="training")
            for path, figure in plots.figures(spec, test, importances(spec, model)).items():
                mlflow.log_figure(figure, path)
                plots.plt.close(figure)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                info = mlflow.spark.log_model(
                    model,
                    "model",
                    signature=signature(spec),
                    input_example=test[list(spec.features)].head(5),
                    registered_model_name=spec.registered_name,
                    pip_requirements=pip_requirements(),
                )
            version = str(info.registered_model_version)
        key = spec.primary_metric
        client = MlflowClient()
        client.update_model_version(
            spec.registered_name,
            version,
            description=(
                f"{spec.name} trained on batch(es) {label} ({scheme}; files {tags['lineage.batch_files']}), "
                f"{train_rows} rows (data up to Timestamp {train_max_ts:.0f}); tested on the latest "
                f"{len(test)} rows: {key} {values[key]:.6g} vs baseline {values['baseline_' + key]:.6g} "
                f"({spec.baseline}). Run {run.info.run_id}."
            ),
        )
        for tag in ("btcflow.batches", "btcflow.last_batch", "btcflow.scheme", "btcflow.train_max_ts"):
            client.set_model_version_tag(spec.registered_name, version, tag, tags[tag])
    finally:
        if windowed:
            df.unpersist()
    seconds = time.monotonic() - started
    log.info(
        "%s v%s on batches %s: %s=%.6g in %.1fs (fit %.1fs, %s rows)",
        spec.registered_name,
        version,
        label,
        key,
        values[key],
        seconds,
        fit_seconds,
        f"{train_rows:,}",
    )
    return TrainResult(
        model=spec.name,
        registered_name=spec.registered_name,
        version=version,
        run_id=run.info.run_id,
        batches=numbers,
        scheme=scheme,
        train_rows=train_rows,
        test_rows=len(test),
        metrics=values,
        seconds=seconds,
        fit_seconds=fit_seconds,
    )


def train_models(
    settings: TrainingSettings,
    models: list[str],
    batches: str | list[int],
    scheme: Scheme = "segment",
    overrides: dict[str, Any] | None = None,
    spark: SparkSession | None = None,
    progress: bool = False,
) -> list[TrainResult]:
    """Train every model on every selection the scheme makes of SPEC `batches`; one version each.

    Checks everything that needs neither Spark nor the tracking store first (models, SPEC, manifest,
    each selection's rows against each model's minimum, every selected file's sha256), so bad input
    fails before anything is logged or Spark starts. Each selection is read once and cached for all models.
    """
    specs = [get_spec(m) for m in models]
    storage = settings.batch_storage()
    manifest = data.read_manifest(storage)
    by_number = {b.batch: b for b in manifest}
    numbers = batches if isinstance(batches, list) else data.parse_spec(batches, list(by_number))
    if missing := [n for n in numbers if n not in by_number]:
        raise BadInput(f"batch {missing[0]} is not in the manifest")
    plan = data.selections(numbers, scheme)
    for selection in plan or [[]]:  # no selection at all is refused too
        data.check_rows(specs, [by_number[n] for n in selection])
    data.verify_batches(storage, [by_number[n] for n in numbers])
    spark = spark or data.session(settings)
    if not isinstance(storage, LocalStorage):  # a shared store's own checksums, asked through Spark's
        data.verify_batches(storage, [by_number[n] for n in numbers], spark)  # client: all before any fit
    connect(settings)
    results: list[TrainResult] = []
    for selection in plan:
        chosen = [by_number[n] for n in selection]
        results += train_selection(spark, settings, specs, chosen, scheme, overrides, progress)
    return results


def train_selection(
    spark: SparkSession,
    settings: TrainingSettings,
    specs: list[ModelSpec],
    chosen: list[Batch],
    scheme: Scheme,
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
) -> list[TrainResult]:
    """One version of each model on exactly these batches, read once and cached for all of them."""
    # Spread over a few partitions (one Parquet file is one partition) so every core fits; cache once.
    base = (
        data.read_batches(spark, settings.batch_storage(), chosen)
        .repartition(settings.spark_partitions)
        .cache()
    )
    try:
        return [train_one(spark, settings, spec, chosen, base, scheme, overrides, progress) for spec in specs]
    finally:
        base.unpersist()


def summary_rows(results: list[TrainResult], stages: dict[tuple[str, str], str] | None = None) -> list[dict]:
    """Rows for the demo table: model, version, batches, key metric, baseline, fit seconds, stage.

    `stages` maps (registered name, version) → stage, e.g. from `registry.stages(settings, results)`.
    """
    rows = []
    for r in results:
        key, value, base = r.primary
        rows.append(
            {
                "model": r.registered_name,
                "version": r.version,
                "batches": describe_batches(r.batches),
                "metric": key,
                "value": round(value, 6),
                "baseline": round(base, 6),
                "fit_s": round(r.fit_seconds, 1),
                "stage": (stages or {}).get((r.registered_name, r.version), "None"),
            }
        )
    return rows
