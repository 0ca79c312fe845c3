"""The versions the monitor scores: each model's Production version and its newest challengers, in shadow.

Production is core.registry's one rule (the gateway's and the gate's too); challengers are the versions
numbered above it (all of them when there is none), the newest `challengers` that load. Each version is
downloaded once and evaluated by the gateway's own numpy engine (serving.evaluate.NumpyEvaluator, checked
against its spec by serving.specs), so the monitor judges exactly what the gateway would answer, with no
JVM. A version that cannot be evaluated is said once and skipped; one that fails for another reason
(a download interrupted) is tried again at the next refresh. A version that leaves the lineup is dropped
(loaded again should it come back).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from core import registry
from core.dataset import COLUMNS
from core.errors import RegistryUnavailable
from monitoring.truth import Ready, minutes
from serving import specs
from serving.errors import UnsupportedModel
from serving.evaluate import Evaluator
from serving.registry import Registry
from training.specs import SPECS, ModelSpec

log = logging.getLogger("monitoring")

PRODUCTION, CHALLENGER = "Production", "challenger"


@dataclass
class Member:
    """One loaded version of one model; `role` follows the registry at each refresh."""

    kind: str
    version: str
    run_id: str  # the training run that logged it
    role: str
    evaluator: Evaluator

    @property
    def spec(self) -> ModelSpec:
        return SPECS[self.kind]

    @property
    def label(self) -> str:
        return f"{self.spec.registered_name} v{self.version}"

    def score(self, ready: Ready) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """This version's predictions on what the poll made scorable, as its rolling log's columns."""
        kind = self.spec.kind
        rows = ready.trend_rows if kind == "classification" else ready.rows
        if not len(rows):
            return None
        inputs = {c: rows[:, COLUMNS.index(c)] for c in self.spec.features}
        out = self.evaluator.outputs(inputs)  # type: ignore[arg-type]  # numpy columns: what it converts to
        prediction = np.asarray(out["prediction"], dtype=np.float64)
        column = {c: rows[:, COLUMNS.index(c)] for c in ("Open", "High", "Low", "Close")}
        if kind == "regression":
            cols = {"actual": column["Close"], "predicted": prediction, "baseline": ready.previous_close}
        elif kind == "high_low":
            cols = {
                "high": column["High"],
                "low": column["Low"],
                "predicted_high": prediction[:, 0],
                "predicted_low": prediction[:, 1],
                "open": column["Open"],
            }
        else:
            cols = {
                "label": ready.trend_label,
                "predicted": prediction,
                "probability_up": np.asarray(out["probability"], dtype=np.float64)[:, 1],
                "baseline": ready.trend_baseline,
            }
        return minutes(rows), cols


@dataclass
class Lineup:
    """Which versions are scored now, refreshed from the registry; loaded ones are kept across refreshes."""

    tracking_uri: str
    challengers: int
    members: dict[str, list[Member]] = field(default_factory=dict)  # kind -> Production first, then newest
    champions: dict[str, str | None] = field(default_factory=dict)
    _loaded: dict[tuple[str, str], Member] = field(default_factory=dict)
    _refused: dict[tuple[str, str], str] = field(default_factory=dict)  # never evaluable: not tried again
    _warned: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.registry = Registry(self.tracking_uri)
        self.client = self.registry.client

    def all(self) -> list[Member]:
        return [m for kind in self.members for m in self.members[kind]]

    def _versions(self, name: str) -> list[Any]:
        return list(self.client().search_model_versions(f"name='{name}'"))

    def refresh(self) -> list[str]:
        """Ask the registry now; load what is new. Lines saying what changed; RegistryUnavailable if it
        did not answer (what is loaded stays as it was)."""
        changes: list[str] = []
        for kind, spec in SPECS.items():
            try:
                found = registry.production(self.client(), spec.registered_name)
                every = registry.answer(partial(self._versions, spec.registered_name))
            except RegistryUnavailable as exc:
                raise RegistryUnavailable(f"MLflow registry at {self.tracking_uri}: {exc}") from exc
            champion = found.version if found else None
            versions = {str(v.version): v for v in every or []}
            if found is not None:
                versions.setdefault(found.version, found.model_version)
            newer = sorted(
                (v for v in versions if champion is None or int(v) > int(champion)), key=int, reverse=True
            )
            lineup: list[Member] = []
            if champion is not None and (member := self._member(kind, versions[champion], PRODUCTION)):
                lineup.append(member)
            taken = 0
            for v in newer:  # newest first; one that cannot be scored leaves its place to an older one
                if taken >= self.challengers:
                    break
                if member := self._member(kind, versions[v], CHALLENGER):
                    lineup.append(member)
                    taken += 1
            before = {m.version: m.role for m in self.members.get(kind, [])}
            after = {m.version: m.role for m in lineup}
            if kind in self.champions and self.champions[kind] != champion:
                was = self.champions[kind]
                changes.append(f"{spec.registered_name}: Production is now v{champion} (was v{was})")
            for v, role in after.items():
                if before.get(v) != role:
                    changes.append(f"scoring {spec.registered_name} v{v} as {role}")
            for v in before.keys() - after.keys():
                changes.append(f"stopped scoring {spec.registered_name} v{v}")
            self.members[kind], self.champions[kind] = lineup, champion
        kept = {(m.spec.registered_name, m.version) for m in self.all()}
        for key in [k for k in self._loaded if k not in kept]:  # left the lineup: its evaluator goes
            del self._loaded[key]
        return changes

    def _member(self, kind: str, mv: Any, role: str) -> Member | None:
        """The loaded version in `role`, loading it on first sight; None if it cannot be scored."""
        spec, version = SPECS[kind], str(mv.version)
        key = (spec.registered_name, version)
        if key in self._refused:
            return None
        member = self._loaded.get(key)
        if member is None:
            try:
                evaluator = self._load(kind, version)
            except Exception as exc:  # any load failure: this version is not scored, the others are
                message = str(exc) if isinstance(exc, UnsupportedModel) else f"{type(exc).__name__}: {exc}"
                if isinstance(exc, UnsupportedModel):
                    self._refused[key] = message
                if key not in self._warned:
                    self._warned.add(key)
                    log.warning("%s v%s not scored: %s", spec.registered_name, version, message)
                return None
            member = Member(kind, version, mv.run_id or "", role, evaluator)
            self._loaded[key] = member
        member.role = role
        return member

    def _load(self, kind: str, version: str) -> Evaluator:
        spec = specs.SPECS[kind]
        evaluator = self.registry.numpy_evaluator(spec.name, version)
        specs.check(spec, version, evaluator)
        return evaluator
