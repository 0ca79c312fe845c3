"""Promotion: which registered version is Production, by choice or by a champion/challenger gate.

Production is recorded twice on purpose: the stage (deprecated in MLflow 3, still what `mlflow
models serve models:/name/Production` and the UI show) and the alias `production` (the MLflow 3 way).
Both move together here and nowhere else; reading them is btcflow.registry's one rule (the stage
wins, the alias is the fallback), which the gateway follows too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from btcflow import registry
from btcflow.registry import StoreUnavailable, quiet_deprecations
from training import data
from training.errors import BadInput, TrackingUnavailable, TrainingError
from training.settings import TrainingSettings
from training.specs import PRODUCTION_ALIAS, PRODUCTION_STAGE, ModelSpec, get_spec
from training.tracking import connect

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from pyspark.sql import SparkSession

log = logging.getLogger("training")
MAX_CHALLENGERS = 5  # each compared version is loaded and scored: keep the gate's cost bounded


@dataclass
class Promotion:
    """What a promotion did (or why it did nothing), for the CLI to print and tests to check."""

    model: str
    version: str | None
    previous: str | None
    promoted: bool
    message: str
    compared: dict[str, float] = field(default_factory=dict)


def _client(settings: TrainingSettings) -> MlflowClient:
    from mlflow import MlflowClient

    connect(settings)
    return MlflowClient()


def _unavailable(exc: StoreUnavailable) -> TrackingUnavailable:
    """Exit 3: the registry did not answer (MLflow's message names the store and the cause)."""
    return TrackingUnavailable(f"MLflow registry unusable: {exc.detail}")


def production_version(client: MlflowClient, spec: ModelSpec) -> ModelVersion | None:
    """The current Production version, by btcflow.registry's rule (the gateway's too): stage, else alias.

    Both move together on promotion; they differ only in a registry edited by hand, and then
    training must compare against the version the gateway serves. None only when the registry
    says there is none; TrackingUnavailable when it cannot say: read as "no champion", a store
    hiccup would let --best promote without a comparison.
    """
    try:
        found = registry.production(client, spec.registered_name)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from exc
    return found.model_version if found else None


def versions(client: MlflowClient, spec: ModelSpec) -> list[ModelVersion]:
    """Every version of the model, oldest first (empty when it was never registered)."""
    found = client.search_model_versions(f"name='{spec.registered_name}'")
    return sorted(found, key=lambda v: int(v.version))


def _set_production(client: MlflowClient, spec: ModelSpec, version: str) -> None:
    with quiet_deprecations():
        client.transition_model_version_stage(
            spec.registered_name, version, PRODUCTION_STAGE, archive_existing_versions=True
        )
    client.set_registered_model_alias(spec.registered_name, PRODUCTION_ALIAS, version)


def promote_version(settings: TrainingSettings, model: str, version: str | int) -> Promotion:
    """Make `version` Production: stage (archiving the previous one) and alias move together."""
    spec = get_spec(model)
    client = _client(settings)
    try:
        found = registry.answer(lambda: client.get_model_version(spec.registered_name, str(version)))
    except StoreUnavailable as exc:
        raise _unavailable(exc) from exc
    if found is None:
        raise BadInput(f"{spec.registered_name} has no version {version}")
    current = production_version(client, spec)
    previous = str(current.version) if current else None
    if previous == str(version):
        return Promotion(
            model,
            str(version),
            previous,
            False,
            f"{spec.registered_name} v{version} is already Production; nothing changed",
        )
    _set_production(client, spec, str(version))
    archived = f"; v{previous} archived" if previous else ""
    return Promotion(
        model,
        str(version),
        previous,
        True,
        f"{spec.registered_name} v{version} is now Production (alias {PRODUCTION_ALIAS}){archived}",
    )


def _train_max_ts(client: MlflowClient, version: ModelVersion) -> float | None:
    value = version.tags.get("btcflow.train_max_ts")
    if value is None and version.run_id:
        value = client.get_run(version.run_id).data.tags.get("btcflow.train_max_ts")
    return float(value) if value is not None else None


def promote_best(
    settings: TrainingSettings,
    model: str,
    spark: SparkSession | None = None,
    max_challengers: int = MAX_CHALLENGERS,
) -> Promotion:
    """Champion/challenger: promote the best newer version only if it beats Production.

    Challengers are the versions newer than Production (all versions when there is none), at most
    `max_challengers`, newest first. Every compared version, champion included, is scored on one
    window: the closed batches' rows after the latest Timestamp any of them trained on, so none has
    seen it. The comparison is recorded as tags on the best challenger, promoted or not.
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
    manifest = [b for b in data.read_manifest(settings.batch_dir) if b.max_ts > cutoff]
    if not manifest:
        raise TrainingError(
            f"no closed batch has rows after Timestamp {cutoff:.0f}, the newest "
            "training data of the compared versions: nothing to compare them on"
        )
    spark = spark or data.session(settings)
    base = data.read_batches(spark, settings.batch_dir, manifest)
    window = prepare(spec, base.where(base.Timestamp > cutoff)).cache()
    try:
        rows = window.count()
        if rows == 0:
            raise TrainingError(f"no usable row after Timestamp {cutoff:.0f} to compare versions on")
        last_ts = first_value(window.agg({"Timestamp": "max"}))
        values: dict[str, float] = {}
        for version in compared:
            try:
                fitted = mlflow_spark.load_model(f"models:/{spec.registered_name}/{version.version}")
            except (MlflowException, OSError) as exc:  # artifacts deleted or moved: it cannot serve either
                log.warning(
                    "%s v%s cannot be loaded, left out: %s", spec.registered_name, version.version, exc
                )
                continue
            values[str(version.version)] = evaluate(spec, score(spec, fitted, window))[spec.primary_metric]
    finally:
        window.unpersist()
    challengers = [v for v in challengers if str(v.version) in values]
    if not challengers:
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
    held = str(champion.version) if champion else None
    decision = "promoted" if wins else f"kept v{held}"
    tags = {
        "promotion.window": f"Timestamp {cutoff:.0f} < ts <= {last_ts:.0f} ({rows} rows)",
        "promotion.metric": key,
        "promotion.value": f"{values[best]:.6g}",
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
        else " (no Production version before)"
    )
    summary = f"{spec.registered_name} v{best} {key}={values[best]:.6g}{versus} on {rows} unseen rows"
    if not wins:
        return Promotion(
            model,
            best,
            held,
            False,
            f"{summary}: challenger does not beat the champion; nothing changed",
            values,
        )
    _set_production(client, spec, best)
    previous = str(champion.version) if champion else None
    archived = f"; v{previous} archived" if previous else ""
    return Promotion(model, best, previous, True, f"{summary}: v{best} is now Production{archived}", values)


def stages(settings: TrainingSettings, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(registered name, version) → current stage, for summary tables."""
    client = _client(settings)
    return {(name, v): client.get_model_version(name, v).current_stage or "None" for name, v in pairs}
