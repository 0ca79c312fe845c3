"""Production: reading it, moving it (by hand, by the gate, back by a rollback) and recording each move.

Production is recorded twice on purpose: the stage (deprecated in MLflow 3, still what `mlflow
models serve models:/name/Production` and the UI show) and the alias `production` (the MLflow 3 way).
Both move together here and nowhere else; reading them is core.registry's one rule (the stage
wins, the alias is the fallback), which the gateway follows too. Every move leaves a record in the
registry (training.history), which is what `btcflow history` shows and what a rollback follows. The
gate that decides whether a newer version deserves Production is training.gate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core import registry
from core.access import refusal
from core.errors import BadInput, RegistryUnavailable
from core.registry import PRODUCTION_ALIAS, PRODUCTION_STAGE, quiet_deprecations
from training import history
from training.errors import TrainingError
from training.settings import TrainingSettings
from training.specs import ModelSpec, get_spec
from training.tracking import connect

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger("training")


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
    repaired: bool = False  # stage and alias were apart and now agree


def registry_client(settings: TrainingSettings) -> MlflowClient:
    from mlflow import MlflowClient

    connect(settings)
    return MlflowClient()


def _unavailable(exc: RegistryUnavailable) -> RegistryUnavailable:
    """Exit 3: the registry did not answer (MLflow's message names the store and the cause)."""
    return RegistryUnavailable(f"MLflow registry unusable: {exc}")


def production_version(client: MlflowClient, spec: ModelSpec) -> ModelVersion | None:
    """The current Production version, by core.registry's rule (the gateway's too): stage, else alias.

    Both move together on promotion; they differ only in a registry edited by hand, and then
    training must compare against the version the gateway serves. None only when the registry
    says there is none; RegistryUnavailable when it cannot say: read as "no champion", a store
    hiccup would let --best promote without a comparison.
    """
    try:
        found = registry.production(client, spec.registered_name)
    except RegistryUnavailable as exc:
        raise _unavailable(exc) from exc
    return found.model_version if found else None


def versions(client: MlflowClient, spec: ModelSpec) -> list[ModelVersion]:
    """Every version of the model, oldest first (empty when it was never registered)."""
    found = client.search_model_versions(f"name='{spec.registered_name}'")
    return sorted(found, key=lambda v: int(v.version))


class PromotionConflict(TrainingError):
    """Production moved (another promotion, a hand edit) while this one was deciding; nothing changed.

    Exit 2, like stale input: the decision was taken against a registry that no longer exists, and
    running the command again decides against the new one.
    """


@dataclass(frozen=True)
class ProductionState:
    """Both records of Production as the registry holds them now: the stage's version and the alias's.

    They agree after every promotion; they differ after one interrupted between the two writes, or a
    hand edit. `current` is core.registry's rule (the stage wins), the version the gateway serves.
    """

    stage: str | None
    alias: str | None
    model_version: ModelVersion | None = field(default=None, compare=False, repr=False)  # current's

    @property
    def current(self) -> str | None:
        return self.stage or self.alias

    @property
    def agreed(self) -> bool:
        return self.stage == self.alias

    def describe(self) -> str:
        if self.agreed:
            return f"v{self.stage}" if self.stage else "none"
        stage, alias = (f"v{v}" if v else "no version" for v in (self.stage, self.alias))
        return f"stage on {stage}, alias on {alias}"


def production_state(client: MlflowClient, spec: ModelSpec) -> ProductionState:
    """The stage's and the alias's versions in one read (RegistryUnavailable when the store cannot say)."""
    name = spec.registered_name
    try:
        staged = registry.answer(lambda: client.get_latest_versions(name, stages=[PRODUCTION_STAGE]))
        aliased = (
            registry.answer(lambda: client.get_model_version_by_alias(name, PRODUCTION_ALIAS))
            if staged is not None  # None: no such registered model, so no alias either
            else None
        )
    except RegistryUnavailable as exc:
        raise _unavailable(exc) from exc
    top = max(staged, key=lambda v: int(v.version)) if staged else None
    return ProductionState(
        str(top.version) if top else None,
        str(aliased.version) if aliased else None,
        top or aliased,
    )


def _write(call: Callable[[], object], what: str) -> None:
    """A registry write: gone (a version deleted meanwhile) is bad input, any other failure exit 3."""
    try:
        with quiet_deprecations():
            call()
    except Exception as exc:  # MlflowException, and SQLAlchemy or connection errors that arrive untyped
        detail = str(getattr(exc, "message", None) or exc).replace("\n", " ")
        if registry.is_absent(exc):
            raise BadInput(f"{what}: {detail}") from exc
        if (refused := refusal(exc, registry.current_server(), what)) is not None:
            raise refused from None
        raise RegistryUnavailable(f"MLflow registry unusable while {what}: {detail}") from exc


def set_production(client: MlflowClient, spec: ModelSpec, version: str, state: ProductionState) -> None:
    """Stage, then alias (the alias fires the gateway's webhook: it must come last), both on `version`.

    The stage is always written (it also archives any other version left in Production); the alias
    only when it is elsewhere, so a repair does not make the gateway reload what it serves.
    """
    name = spec.registered_name
    step = f"moving Production of {name} to v{version} (the next promotion repairs a half-done move)"
    _write(
        lambda: client.transition_model_version_stage(
            name, version, PRODUCTION_STAGE, archive_existing_versions=True
        ),
        step,
    )
    if state.alias != version:
        _write(lambda: client.set_registered_model_alias(name, PRODUCTION_ALIAS, version), step)


def move_production(
    client: MlflowClient, spec: ModelSpec, version: str, seen: ProductionState, record: history.Record | None
) -> None:
    """Make `version` Production and record why, unless Production moved since `seen` was read.

    Read again just before writing: a gate scores for minutes, and a decision taken against a champion
    that another promotion has meanwhile replaced must not overwrite it (PromotionConflict, exit 2).
    The record goes last, once both writes are done.
    """
    now = production_state(client, spec)
    if now != seen:
        raise PromotionConflict(
            f"Production of {spec.registered_name} moved while this promotion was deciding "
            f"({seen.describe()}, now {now.describe()}); nothing changed: run it again"
        )
    set_production(client, spec, version, now)
    if record is not None:
        _write(
            lambda: history.write(client, spec.registered_name, record),
            f"recording the promotion of {spec.registered_name} v{version} (it is Production)",
        )


def promote_version(settings: TrainingSettings, model: str, version: str | int) -> Promotion:
    """Make `version` Production by hand: stage (archiving the previous one) and alias move together.

    A version that holds only one of the two (an interrupted promotion) gets the other: a repair, not
    a promotion, so nothing is added to the history.
    """
    spec = get_spec(model)
    name, wanted = spec.registered_name, str(version)
    client = registry_client(settings)
    try:
        found = registry.answer(lambda: client.get_model_version(name, wanted))
    except RegistryUnavailable as exc:
        raise _unavailable(exc) from exc
    if found is None:
        raise BadInput(f"{name} has no version {version}")
    state = production_state(client, spec)
    if state.stage == wanted and state.alias == wanted:
        return Promotion(
            model, wanted, wanted, False, f"{name} v{wanted} is already Production; nothing changed"
        )
    if state.current == wanted:
        move_production(client, spec, wanted, state, None)
        return Promotion(
            model,
            wanted,
            wanted,
            False,
            f"{name} v{wanted} held only part of Production ({state.describe()}): stage and alias "
            f"{PRODUCTION_ALIAS} now both on it (repaired)",
            repaired=True,
        )
    move_production(client, spec, wanted, state, history.Record(wanted, "hand", state.current))
    return Promotion(
        model,
        wanted,
        state.current,
        True,
        f"{name} v{wanted} is now Production (alias {PRODUCTION_ALIAS}){before(state)}",
        repaired=not state.agreed,
    )


def before(state: ProductionState) -> str:
    """What became of the previous Production, for the end of a promotion's message."""
    if not state.agreed:
        return f"; it was {state.describe()}, both records now agree"
    return f"; v{state.stage} archived" if state.stage else ""


def rollback(settings: TrainingSettings, model: str) -> Promotion:
    """Production back to the version before it, as the history records it; itself recorded as a rollback.

    BadInput (nothing changed) when no record says which version was Production before, or when that
    version is gone from the registry.
    """
    spec = get_spec(model)
    name = spec.registered_name
    client = registry_client(settings)
    state = production_state(client, spec)
    if state.current is None:
        raise BadInput(f"{name} has no Production version to roll back")
    target = history.rollback_target(_history(client, spec), state.current)
    if target is None:
        raise BadInput(
            f"no version of {name} before v{state.current} is recorded as Production; nothing changed"
        )
    try:
        exists = registry.answer(lambda: client.get_model_version(name, target))
    except RegistryUnavailable as exc:
        raise _unavailable(exc) from exc
    if exists is None:
        raise BadInput(
            f"{name} v{target}, Production before v{state.current}, no longer exists; nothing changed"
        )
    move_production(client, spec, target, state, history.Record(target, "rollback", state.current))
    return Promotion(
        model,
        target,
        state.current,
        True,
        f"{name} rolled back: v{target} is Production again{before(state)}",
    )


def _history(client: MlflowClient, spec: ModelSpec) -> list[history.Record]:
    try:
        found = registry.answer(lambda: client.get_registered_model(spec.registered_name))
    except RegistryUnavailable as exc:
        raise _unavailable(exc) from exc
    return history.records(found.tags) if found is not None else []


def promotions(settings: TrainingSettings, model: str) -> list[history.Record]:
    """Every recorded promotion of the model, newest first (empty when it was never registered)."""
    spec = get_spec(model)
    return _history(registry_client(settings), spec)


def stages(settings: TrainingSettings, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(registered name, version) → current stage, for summary tables."""
    client = registry_client(settings)
    return {(name, v): client.get_model_version(name, v).current_stage or "None" for name, v in pairs}
