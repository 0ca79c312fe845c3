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

from core.errors import BadInput, RegistryUnavailable
from core.registry import is_absent
from training import data
from training.errors import TrainingError
from training.history import Record
from training.registry import Promotion, before, move_production, production_state, registry_client, versions
from training.settings import TrainingSettings
from training.specs import ModelSpec, get_spec

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("training")
MAX_CHALLENGERS = 5  # each compared version is loaded and scored: keep the gate's cost bounded


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
    manifest = data.read_manifest(settings.batch_storage())
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


def _scores(
    spec: ModelSpec, compared: list[ModelVersion], champion: str | None, window: DataFrame
) -> tuple[dict[str, float], pd.DataFrame | None]:
    """Each loadable version's primary metric on the window, and the last scored rows (for the baseline).

    A challenger that cannot be loaded is left out with a warning: it could not serve either. The
    champion is left out only when the store says it no longer exists (core.registry.is_absent, or a
    local artifact path gone); any other failure stops the gate (exit 3): dropping it would promote the
    best challenger unchallenged because of a store hiccup.
    """
    from mlflow import spark as mlflow_spark
    from mlflow.exceptions import MlflowException

    from training.metrics import evaluate
    from training.train import score

    values: dict[str, float] = {}
    scored: pd.DataFrame | None = None
    for version in compared:
        number = str(version.version)
        try:
            fitted = mlflow_spark.load_model(f"models:/{spec.registered_name}/{number}")
        except Exception as exc:
            gone = is_absent(exc) or isinstance(exc, FileNotFoundError)
            if number == champion and not gone:
                detail = str(getattr(exc, "message", None) or exc).replace("\n", " ")
                raise RegistryUnavailable(
                    f"Production v{number} of {spec.registered_name} could not be loaded to compare against: "
                    f"{detail}; nothing changed"
                ) from exc
            if number != champion and not isinstance(exc, (MlflowException, OSError)):
                raise
            log.warning("%s v%s cannot be loaded, left out: %s", spec.registered_name, number, exc)
            continue
        scored = score(spec, fitted, window)
        values[number] = evaluate(spec, scored)[spec.primary_metric]
    return values, scored


def promote_best(
    settings: TrainingSettings,
    model: str,
    spark: SparkSession | None = None,
    max_challengers: int = MAX_CHALLENGERS,
    require_baseline: bool = False,
    by: str = "gate",
) -> Promotion:
    """Champion/challenger: promote the best newer version only if it beats Production.

    Challengers are the versions newer than Production (all versions when there is none), at most
    `max_challengers`, newest first. Every compared version, champion included, is scored on one
    window: the closed batches' rows after the latest Timestamp any of them trained on, so none has
    seen it; the naive baseline is scored on the same rows. With `require_baseline` a best challenger
    that does not beat the baseline on the primary metric is refused. The comparison is recorded as
    tags on the best challenger, promoted or not; a promotion also in the model's history, as made
    `by` the gate (the monitor passes "monitor"). Production is read again before it moves:
    PromotionConflict (nothing changed) when another promotion happened meanwhile.
    """
    from training.train import first_value, prepare

    spec = get_spec(model)
    client = registry_client(settings)
    state = production_state(client, spec)
    champion = state.model_version
    every = versions(client, spec)
    if not every:
        raise BadInput(f"{spec.registered_name} has no version yet: train it first")
    newer = [v for v in every if champion is None or int(v.version) > int(str(champion.version))]
    challengers = [v for v in newer if _train_max_ts(client, v) is not None][-max_challengers:]
    if not challengers:
        return Promotion(
            model,
            None,
            state.current,
            False,
            f"no version of {spec.registered_name} newer than Production v{state.current or '-'}; "
            "nothing changed",
        )
    compared = ([champion] if champion else []) + challengers  # the champion first: its failure stops all
    cutoff = max(_train_max_ts(client, v) or 0.0 for v in compared)  # a champion not ours: trust it
    held_out = _window_batches(settings, cutoff)
    storage = settings.batch_storage()
    data.verify_batches(storage, held_out)  # before Spark: a changed file is exit 2, nothing read
    spark = spark or data.session(settings)
    base = data.read_batches(spark, storage, held_out)
    window = prepare(spec, base.where(base.Timestamp > cutoff)).cache()
    try:
        rows = window.count()
        if rows == 0:
            raise TrainingError(f"no usable row after Timestamp {cutoff:.0f} to compare versions on")
        last_ts = first_value(window.agg({"Timestamp": "max"}))
        values, scored = _scores(spec, compared, state.current, window)
        naive = baseline(spec, base.where(base.Timestamp <= cutoff), scored) if scored is not None else None
    finally:
        window.unpersist()
    challengers = [v for v in challengers if str(v.version) in values]
    if not challengers or naive is None:
        raise TrainingError(f"no challenger of {spec.registered_name} could be loaded; nothing changed")
    held = state.current if state.current in values else None
    if state.current and held is None:
        log.warning("Production v%s no longer exists: the best challenger takes its place", state.current)
    best = str(challengers[0].version)
    for v in challengers:
        if spec.better(values[str(v.version)], values[best]):
            best = str(v.version)
    key = spec.primary_metric
    wins = held is None or spec.better(values[best], values[held])
    beats = spec.better(values[best], naive.value)
    refused = wins and require_baseline and not beats
    decision = (
        "promoted" if wins and not refused else "refused: below baseline" if refused else f"kept v{held}"
    )
    tags = {
        "promotion.window": f"Timestamp {cutoff:.0f} < ts <= {last_ts:.0f} ({rows} rows)",
        "promotion.metric": key,
        "promotion.value": f"{values[best]:.6g}",
        "promotion.baseline": f"{naive.value:.6g}",
        "promotion.baseline_from": naive.source,
        "promotion.champion": held or "none",
        "promotion.champion_value": f"{values[held]:.6g}" if held else "none",
        "promotion.compared": json.dumps({v: round(x, 6) for v, x in values.items()}),
        "promotion.decision": decision,
        "promotion.at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for name, value in tags.items():
        client.set_model_version_tag(spec.registered_name, best, name, value)
    versus = f" vs Production v{held} {key}={values[held]:.6g}" if held else ", no Production version before,"
    against = f"baseline {naive.value:.6g}: {'beats it' if beats else 'does not beat it'}"
    summary = (
        f"{spec.registered_name} v{best} {key}={values[best]:.6g} ({against}){versus} on {rows:,} unseen rows"
    )
    outcome = Promotion(model, best, state.current, False, "", values, naive.value, beats)
    if not wins:
        outcome.message = f"{summary}: challenger does not beat the champion; nothing changed"
        return outcome
    if refused:
        outcome.message = (
            f"{summary}: v{best} does not beat the baseline (--require-baseline); nothing changed"
        )
        return outcome
    record = Record(best, by, state.current, metric=key, values=values, baseline=naive.value, rows=rows)
    move_production(client, spec, best, state, record)
    below = ", although it does not beat the baseline" if not beats else ""
    outcome.promoted, outcome.repaired = True, not state.agreed
    outcome.message = f"{summary}: v{best} is now Production{below}{before(state)}"
    return outcome
