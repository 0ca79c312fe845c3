"""Promotion: which registered version is Production, and moving it (the gate that decides is gate.py).

Production is recorded twice on purpose: the stage (deprecated in MLflow 3, still what `mlflow
models serve models:/name/Production` and the UI show) and the alias `production` (the MLflow 3 way).
Both move together here and nowhere else; reading them is btcflow.registry's one rule (the stage
wins, the alias is the fallback), which the gateway follows too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from btcflow import registry
from btcflow.registry import StoreUnavailable, quiet_deprecations
from training.errors import BadInput, TrackingUnavailable
from training.settings import TrainingSettings
from training.specs import PRODUCTION_ALIAS, PRODUCTION_STAGE, ModelSpec, get_spec
from training.tracking import connect

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

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
    compared: dict[str, float] = field(default_factory=dict)  # version -> primary metric on the window
    baseline: float | None = None  # the naive baseline's primary metric on the same rows (the gate only)
    beats_baseline: bool | None = None  # whether the best challenger beats it (strictly)


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


def set_production(client: MlflowClient, spec: ModelSpec, version: str) -> None:
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
    set_production(client, spec, str(version))
    archived = f"; v{previous} archived" if previous else ""
    return Promotion(
        model,
        str(version),
        previous,
        True,
        f"{spec.registered_name} v{version} is now Production (alias {PRODUCTION_ALIAS}){archived}",
    )


def stages(settings: TrainingSettings, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(registered name, version) → current stage, for summary tables."""
    client = _client(settings)
    return {(name, v): client.get_model_version(name, v).current_stage or "None" for name, v in pairs}


def __getattr__(name: str) -> Any:
    """`training.registry.promote_best`, where callers written before the gate had its module find it."""
    if name == "promote_best":
        from training.gate import promote_best

        return promote_best
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
