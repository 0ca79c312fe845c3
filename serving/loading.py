"""Which version each model kind is served by: the registry's answer, turned into loads, swaps and drops.

A `Loader` holds one immutable `Loaded` per model kind in a dict it replaces whole, never mutates: a request
(serving.models) reads the entry once and is answered wholly by that version, even while a refresh swaps
in a new one. A refresh asks the registry for each model's Production version, loads a new one beside the
old and only then swaps; a version that fails to load, or does not match its model's spec
(serving.specs), is recorded (shown by /models), retried after a backoff, and the old one keeps serving.
A model is dropped (its routes answer 503) only when two registry answers in a row say it has no
Production version: one odd answer never unloads it, and a registry that does not answer never does.
Refreshes run one at a time, under one lock: the follower thread's (serving.following) or a forced reload.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from core.errors import AccessRefused, RegistryUnavailable
from core.registry import Production
from serving import specs
from serving.errors import ServingError, UnsupportedModel
from serving.evaluate import Evaluator, SparkEvaluator
from serving.registry import Registry
from serving.settings import ServingSettings
from serving.specs import SPECS, Spec

log = logging.getLogger("serving")

MAX_SKIPPED_POLLS = 30  # a version that keeps failing to load is retried at least every 31 polls
ABSENT_ANSWERS_TO_DROP = 2  # consecutive "no Production version" answers before a served model is dropped


@dataclass(frozen=True)
class Loaded:
    """One model version ready to answer; replaced whole on a swap, never changed."""

    spec: Spec
    production: Production  # the registry's record: version, run_id, stage (or alias)
    loaded_at: str
    evaluator: Evaluator

    @property
    def version(self) -> str:
        return self.production.version

    @property
    def run_id(self) -> str:
        return self.production.run_id

    @property
    def stage(self) -> str:
        return self.production.stage

    def ref(self) -> dict[str, str]:
        return {"name": self.spec.name, "version": self.version, "run_id": self.run_id}


@dataclass
class Failure:
    """The last version of a model that failed to load, and when a refresh may try it again.

    Retried after a backoff of 1, 2, 4 ... (at most MAX_SKIPPED_POLLS) polls, since the cause may pass
    (store or disk briefly unavailable); a version the engine cannot evaluate (UnsupportedModel) only when
    forced (POST /admin/reload).
    """

    version: str
    message: str
    at: str
    attempts: int = 1
    polls_to_skip: int | None = 1  # None: never again unless forced (the engine cannot evaluate it)

    @classmethod
    def of(cls, exc: Exception, version: str, before: Failure | None) -> Failure:
        """This load's failure, counting the attempts at the same version before it."""
        message = str(exc) if isinstance(exc, ServingError) else f"{type(exc).__name__}: {exc}"
        attempts = before.attempts + 1 if before is not None and before.version == version else 1
        skip = None if isinstance(exc, UnsupportedModel) else min(2 ** (attempts - 1), MAX_SKIPPED_POLLS)
        return cls(version, message, _now(), attempts, skip)

    def waits(self, version: str, force: bool) -> bool:
        """Whether this refresh leaves `version` alone (counting one skipped poll)."""
        if version != self.version or force:
            return False
        if self.polls_to_skip is None:
            return True
        if self.polls_to_skip > 0:
            self.polls_to_skip -= 1
            return True
        return False

    def shown(self) -> dict[str, str]:
        """What /models says about it."""
        if self.polls_to_skip is None:
            retry = "only on POST /admin/reload"
        else:
            retry = f"after {self.polls_to_skip} more registry check(s)"
        return {"version": self.version, "message": self.message, "at": self.at, "retry": retry}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Loader:
    """Load and swap the three Production models as the registry's answers say."""

    settings: ServingSettings
    registry: Registry | None = None
    _loaded: dict[str, Loaded] = field(default_factory=dict)
    _failures: dict[str, Failure] = field(default_factory=dict)
    _registry_error: str | None = None
    _checked_at: str | None = None
    _checked: threading.Event = field(default_factory=threading.Event)  # set by the first registry check
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _absent: dict[str, int] = field(default_factory=dict)  # kind -> "no Production" answers in a row

    def __post_init__(self) -> None:
        if self.registry is None:
            self.registry = Registry(self.settings.tracking_uri)

    def check_registry(self, force: bool = False) -> None:
        """Ask the registry now; load and swap in any new Production version (`force`: retry failures)."""
        with self._lock:
            for kind, spec in SPECS.items():
                try:
                    self._refresh_one(kind, spec, force)
                    self._registry_error = None
                except (RegistryUnavailable, AccessRefused) as exc:  # keep serving what is loaded
                    self._registry_error = str(exc)
                    log.warning("%s", exc)
                    break
            self._checked_at = _now()
            self._checked.set()

    def wait_checked(self, timeout_s: float) -> bool:
        """Block until the first registry check has finished (models loaded, or failed), or the timeout."""
        return self._checked.wait(timeout_s)

    def _refresh_one(self, kind: str, spec: Spec, force: bool) -> None:
        assert self.registry is not None
        candidate = self.registry.production(spec.name)
        current = self._loaded.get(kind)
        if candidate is None:  # the registry answered: no Production version (any more). Contract: 503
            self._absent_once(kind, spec, current)
            return
        self._absent.pop(kind, None)
        if current is not None and current.version == candidate.version:
            if current.stage != candidate.stage:
                self._swap(kind, replace(current, production=candidate))
            return
        failed = self._failures.get(kind)
        if failed is not None and failed.waits(candidate.version, force):
            return
        try:
            evaluator = self._load(spec, candidate.version)
            specs.check(spec, candidate.version, evaluator)
        except Exception as exc:  # any load failure: record it, keep serving the old version
            self._failures[kind] = failure = Failure.of(exc, candidate.version, failed)
            log.error(
                "%s version %s not loaded, still serving %s: %s",
                spec.name,
                candidate.version,
                current.version if current else "nothing",
                failure.message,
            )
            return
        self._failures.pop(kind, None)
        self._swap(kind, _loaded(spec, candidate, evaluator))
        log.info("%s: now serving version %s", spec.name, candidate.version)

    def _absent_once(self, kind: str, spec: Spec, current: Loaded | None) -> None:
        """One more "no Production version" answer: the model is dropped at the second in a row."""
        self._absent[kind] = answers = self._absent.get(kind, 0) + 1
        if current is not None and answers >= ABSENT_ANSWERS_TO_DROP:
            self._loaded = {k: v for k, v in self._loaded.items() if k != kind}
            log.warning(
                "%s: no Production version in %d answers in a row, stopped serving version %s",
                spec.name,
                answers,
                current.version,
            )
        elif current is not None:
            log.warning("%s: the registry says no Production version; asking again", spec.name)

    def _load(self, spec: Spec, version: str) -> Evaluator:
        assert self.registry is not None
        if self.settings.serving_engine == "spark":
            return SparkEvaluator(f"models:/{spec.name}/{version}", self.settings.tracking_uri)
        return self.registry.numpy_evaluator(spec.name, version)

    def _swap(self, kind: str, loaded: Loaded) -> None:
        self._loaded = {**self._loaded, kind: loaded}  # one reference assignment: atomic for readers


def _loaded(spec: Spec, candidate: Production, evaluator: Evaluator) -> Loaded:
    return Loaded(spec, candidate, _now(), evaluator)
