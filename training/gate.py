"""The champion/challenger gate (`promote --best`): a newer version becomes Production only on evidence.

Every compared version, the champion included, is scored on one window that none of them trained on,
beside the naive baseline on the same rows (training's own definition, training.metrics.baseline): a
challenger that wins against a weak champion but not against doing nothing is said to be so, and
refused with `require_baseline`. Moving Production itself is training.registry's job.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from training import data
from training.errors import BadInput, TrainingError
from training.registry import (
    MAX_CHALLENGERS,
    Promotion,
    _client,
    production_version,
    set_production,
    versions,
)
from training.settings import TrainingSettings
from training.specs import ModelSpec, get_spec

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("training")


@dataclass(frozen=True)
class Baseline:
    """What doing nothing clever scores on the window, and from what (for the message and the tags)."""

    value: float
    source: str


def _train_max_ts(client: MlflowClient, version: ModelVersion) -> float | None:
    value = version.tags.get("btcflow.train_max_ts")
    if value is None and version.run_id:
        value = client.get_run(version.run_id).data.tags.get("btcflow.train_max_ts")
    return float(value) if value is not None else None


def baseline(spec: ModelSpec, before: DataFrame, scored: pd.DataFrame) -> Baseline:
    """The naive baseline on the window's scored rows, from the rows just before the window only.

    close: the last Close before the window (else, said so, the window's first Open: the price known
    when it opens); high_low: Open for both; trend: a constant, the share of Up minutes before the
    window (0.5 without any), whose roc_auc is 0.5 whatever it is.
    """
    from training.metrics import baseline as naive
    from training.train import prepare

    last_close, rate = 0.0, 0.5
    source = spec.baseline
    if spec.kind == "regression":
        row = before.orderBy(before.Timestamp.desc()).select("Close").first()
        if row is not None:
            last_close, source = float(row[0]), "the last Close before the window"
        else:
            last_close = float(scored.sort_values("Timestamp")["Open"].iloc[0])
            source = "the window's first Open (no row before the window is on file)"
    elif spec.kind == "classification":
        row = prepare(spec, before).agg({"label": "avg"}).first()
        if row is not None and row[0] is not None:
            rate = float(row[0])
        source = f"a constant Up probability of {rate:.3g} (the share before the window)"
    value = naive(spec, {"last_close": last_close, "positive_rate": rate}, scored)
    return Baseline(value[f"baseline_{spec.primary_metric}"], source)


def _window_batches(settings: TrainingSettings, cutoff: float) -> list[data.Batch]:
    """The batches with rows after the cutoff, plus the one holding the last row before it (baseline)."""
    manifest = data.read_manifest(settings.batch_dir)
    after = [b for b in manifest if b.max_ts > cutoff]
    if not after:
        raise TrainingError(
            f"no closed batch has rows after Timestamp {cutoff:.0f}, the newest "
            "training data of the compared versions: nothing to compare them on"
        )
    holding = [b for b in manifest if b.min_ts <= cutoff]
    if holding:
        last = max(holding, key=lambda b: b.min_ts)
        after = [last, *after] if last not in after else after
    return after


def promote_best(
    settings: TrainingSettings,
    model: str,
    spark: SparkSession | None = None,
    max_challengers: int = MAX_CHALLENGERS,
    require_baseline: bool = False,
) -> Promotion:
    """Champion/challenger: promote the best newer version only if it beats Production.

    Challengers are the versions newer than Production (all versions when there is none), at most
    `max_challengers`, newest first. Every compared version, champion included, is scored on one
    window: the closed batches' rows after the latest Timestamp any of them trained on, so none has
    seen it; the naive baseline is scored on the same rows. With `require_baseline` a best challenger
    that does not beat the baseline on the primary metric is refused. The comparison is recorded as
    tags on the best challenger, promoted or not.
    """
    from mlflow import spark as mlflow_spark
    from mlflow.exceptions import MlflowException

    from training.metrics import evaluate
    from training.train import first_value, prepare, score

    spec = get_spec(model)
    client = _client(settings)
    champion = production_version(client, spec)
    every = versions(client, spec)
    if not every:
        raise BadInput(f"{spec.registered_name} has no version yet: train it first")
    newer = [v for v in every if champion is None or int(v.version) > int(str(champion.version))]
    challengers = [v for v in newer if _train_max_ts(client, v) is not None][-max_challengers:]
    if not challengers:
        return Promotion(
            model,
            None,
            str(champion.version) if champion else None,
            False,
            f"no version of {spec.registered_name} newer than Production "
            f"v{str(champion.version) if champion else '-'}; nothing changed",
        )
    compared = challengers + ([champion] if champion else [])
    cutoff = max(_train_max_ts(client, v) or 0.0 for v in compared)  # a champion not ours: trust it
    spark = spark or data.session(settings)
    base = data.read_batches(spark, settings.batch_dir, _window_batches(settings, cutoff))
    window = prepare(spec, base.where(base.Timestamp > cutoff)).cache()
    try:
        rows = window.count()
        if rows == 0:
            raise TrainingError(f"no usable row after Timestamp {cutoff:.0f} to compare versions on")
        last_ts = first_value(window.agg({"Timestamp": "max"}))
        values: dict[str, float] = {}
        scored: pd.DataFrame | None = None
        for version in compared:
            try:
                fitted = mlflow_spark.load_model(f"models:/{spec.registered_name}/{version.version}")
            except (MlflowException, OSError) as exc:  # artifacts deleted or moved: it cannot serve either
                log.warning(
                    "%s v%s cannot be loaded, left out: %s", spec.registered_name, version.version, exc
                )
                continue
            scored = score(spec, fitted, window)
            values[str(version.version)] = evaluate(spec, scored)[spec.primary_metric]
        naive = baseline(spec, base.where(base.Timestamp <= cutoff), scored) if scored is not None else None
    finally:
        window.unpersist()
    challengers = [v for v in challengers if str(v.version) in values]
    if not challengers or naive is None:
        raise TrainingError(f"no challenger of {spec.registered_name} could be loaded; nothing changed")
    if champion and str(champion.version) not in values:
        log.warning("Production v%s cannot be loaded: the best challenger takes its place", champion.version)
        champion = None
    best = str(challengers[0].version)
    for v in challengers:
        if spec.better(values[str(v.version)], values[best]):
            best = str(v.version)
    key = spec.primary_metric
    wins = champion is None or spec.better(values[best], values[str(champion.version)])
    beats = spec.better(values[best], naive.value)
    refused = wins and require_baseline and not beats
    held = str(champion.version) if champion else None
    decision = (
        "promoted" if wins and not refused else "refused: below baseline" if refused else f"kept v{held}"
    )
    tags = {
        "promotion.window": f"Timestamp {cutoff:.0f} < ts <= {last_ts:.0f} ({rows} rows)",
        "promotion.metric": key,
        "promotion.value": f"{values[best]:.6g}",
        "promotion.baseline": f"{naive.value:.6g}",
        "promotion.baseline_from": naive.source,
        "promotion.champion": str(champion.version) if champion else "none",
        "promotion.champion_value": f"{values[str(champion.version)]:.6g}" if champion else "none",
        "promotion.compared": json.dumps({v: round(x, 6) for v, x in values.items()}),
        "promotion.decision": decision,
        "promotion.at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for name, value in tags.items():
        client.set_model_version_tag(spec.registered_name, best, name, value)
    versus = (
        f" vs Production v{str(champion.version)} {key}={values[str(champion.version)]:.6g}"
        if champion
        else ", no Production version before,"
    )
    against = f"baseline {naive.value:.6g}: {'beats it' if beats else 'does not beat it'}"
    summary = (
        f"{spec.registered_name} v{best} {key}={values[best]:.6g} ({against}){versus} on {rows:,} unseen rows"
    )
    outcome = Promotion(model, best, held, False, "", values, naive.value, beats)
    if not wins:
        outcome.message = f"{summary}: challenger does not beat the champion; nothing changed"
        return outcome
    if refused:
        outcome.message = (
            f"{summary}: v{best} does not beat the baseline (--require-baseline); nothing changed"
        )
        return outcome
    set_production(client, spec, best)
    archived = f"; v{held} archived" if held else ""
    below = ", although it does not beat the baseline" if not beats else ""
    outcome.promoted = True
    outcome.message = f"{summary}: v{best} is now Production{below}{archived}"
    return outcome
