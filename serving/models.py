"""The gateway's core, free of HTTP: which versions are Production, loading them, predicting by model.

A `Gateway` holds one immutable `Loaded` per model kind in a dict it replaces whole, never mutates: a request
reads the entry once and is answered wholly by that version, even while the follower swaps in a new one.
The follower thread asks the registry every `poll_interval_s` (and at once on a webhook), loads a new
Production version beside the old one and only then swaps; a version that fails to load, or does not
match its model's spec (serving.specs), is recorded (shown by /models) and the old one keeps serving.
A model is dropped (its routes answer 503) only when two registry answers in a row say it has no
Production version: one odd answer never unloads it, and a registry that does not answer never does.
Only the follower thread (serving.following) or a forced reload, under one lock, talks to MLflow.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from serving import specs
from serving.errors import (
    BadInput,
    ModelUnavailable,
    NotReady,
    RegistryUnavailable,
    ServingError,
    UnsupportedModel,
)
from serving.evaluate import Evaluator, SparkEvaluator
from serving.following import Follower
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
    version: str
    run_id: str
    stage: str  # "Production", or "alias:production" when found by the alias only
    loaded_at: str
    evaluator: Evaluator

    def ref(self) -> dict[str, str]:
        return {"name": self.spec.name, "version": self.version, "run_id": self.run_id}


@dataclass
class Failure:
    """The last version of a model that failed to load, and when the poller may try it again."""

    version: str
    message: str
    at: str
    attempts: int = 1
    polls_to_skip: int | None = 1  # None: never again unless forced (the engine cannot evaluate it)

    def shown(self) -> dict[str, str]:
        """What /models says about it."""
        if self.polls_to_skip is None:
            retry = "only on POST /admin/reload"
        else:
            retry = f"after {self.polls_to_skip} more registry check(s)"
        return {"version": self.version, "message": self.message, "at": self.at, "retry": retry}


def _first_non_finite(columns: list[list[Any]]) -> int | None:
    """The first row index where any column is not a finite number (None reads as NaN), else None."""
    first: int | None = None
    for values in columns:
        if len(values) == 1:  # the GET path: no numpy round trip
            v = values[0]
            if not (isinstance(v, float | int) and math.isfinite(v)):
                return 0
            continue
        ok = np.isfinite(np.asarray(values, dtype=np.float64))
        if not ok.all():
            i = int(np.argmin(ok))
            first = i if first is None else min(first, i)
    return first


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Gateway:
    """Resolve, load and swap the three Production models; predict by model kind."""

    settings: ServingSettings
    registry: Registry | None = None
    _loaded: dict[str, Loaded] = field(default_factory=dict)
    _failures: dict[str, Failure] = field(default_factory=dict)
    _registry_error: str | None = None
    _checked_at: str | None = None
    _checked: threading.Event = field(default_factory=threading.Event)  # set by the first registry check
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _absent: dict[str, int] = field(default_factory=dict)  # kind -> "no Production" answers in a row
    _follower: Follower | None = None

    def __post_init__(self) -> None:
        if self.registry is None:
            self.registry = Registry(self.settings.tracking_uri)

    # -- reading (request path: no lock, one dict read) --------------------------------------------
    def model(self, kind: str) -> Loaded:
        loaded = self._loaded.get(kind)
        if loaded is None:
            raise ModelUnavailable(SPECS[kind].name)
        return loaded

    def predict(
        self, kind: str, rows: Mapping[str, Sequence[float]], single: bool = False
    ) -> tuple[Loaded, dict[str, list[Any]]]:
        """Answer a batch given as request-field columns, in row order, with the version that answered.

        An answer that is not a finite number (a model overflowing on extreme inputs) is BadInput naming
        the row (`query` for a `single` GET): JSON has no NaN, and a null would read as a prediction.
        """
        loaded = self.model(kind)
        out = loaded.evaluator.outputs({loaded.spec.inputs[f]: rows[f] for f in loaded.spec.inputs})
        prediction = out["prediction"]
        answer: dict[str, list[Any]]
        if kind == "close":
            answer = {"predicted_close": prediction}
        elif kind == "high_low":  # the final VectorAssembler's [high, low]
            answer = {
                "predicted_high": [p[0] for p in prediction],
                "predicted_low": [p[1] for p in prediction],
            }
        else:
            labels = ["Up" if p == 1.0 else "Down" for p in prediction]
            answer = {"predicted_trend": labels, "probability_up": [p[1] for p in out["probability"]]}
        bad = _first_non_finite([v for k, v in answer.items() if k != "predicted_trend"])
        if bad is not None:
            raise BadInput(
                "query" if single else f"rows[{bad}]",
                f"{loaded.spec.name} version {loaded.version} gives no finite answer for these values",
            )
        return loaded, answer

    def ready(self) -> None:
        missing = [spec.name for kind, spec in SPECS.items() if kind not in self._loaded]
        if missing:
            raise NotReady(missing)

    def status(self) -> dict[str, Any]:
        models = []
        loaded, failures = self._loaded, dict(self._failures)
        for kind, spec in SPECS.items():
            entry: dict[str, Any] = {
                "kind": kind,
                "name": spec.name,
                "version": None,
                "stage": None,
                "run_id": None,
                "loaded_at": None,
                "last_error": None,
            }
            if kind in loaded:
                m = loaded[kind]
                entry.update(version=m.version, stage=m.stage, run_id=m.run_id, loaded_at=m.loaded_at)
            if kind in failures:
                entry["last_error"] = failures[kind].shown()
            models.append(entry)
        return {
            "pid": os.getpid(),  # which worker process of the gateway answered
            "engine": self.settings.serving_engine,
            "tracking_uri": self.settings.tracking_uri,
            "checked_at": self._checked_at,
            "registry_error": self._registry_error,
            "models": models,
        }

    # -- following the registry (poller thread or forced reload) -----------------------------------
    def refresh(self, force: bool = False) -> dict[str, Any]:
        """Ask the registry now; load and swap in any new Production version. Returns `status()`.

        A version that failed to load is retried after a backoff of 1, 2, 4 ... (at most
        MAX_SKIPPED_POLLS) polls, since the cause may pass (store or disk briefly unavailable); one the
        engine cannot evaluate (UnsupportedModel) only when forced (POST /admin/reload).
        """
        with self._lock:
            for kind, spec in SPECS.items():
                try:
                    self._refresh_one(kind, spec, force)
                    self._registry_error = None
                except RegistryUnavailable as exc:
                    self._registry_error = str(exc)
                    log.warning("%s", exc)
                    break
            self._checked_at = _now()
            self._checked.set()
        return self.status()

    def _refresh_one(self, kind: str, spec: Spec, force: bool) -> None:
        assert self.registry is not None
        candidate = self.registry.production(spec.name)
        current = self._loaded.get(kind)
        if candidate is None:  # the registry answered: no Production version (any more). Contract: 503
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
            return
        self._absent.pop(kind, None)
        if current is not None and current.version == candidate.version:
            if current.stage != candidate.stage:
                self._swap(kind, Loaded(**{**current.__dict__, "stage": candidate.stage}))
            return
        failed = self._failures.get(kind)
        if failed is not None and failed.version == candidate.version and not force:
            if failed.polls_to_skip is None:
                return
            if failed.polls_to_skip > 0:
                failed.polls_to_skip -= 1
                return
        try:
            evaluator = self._load(spec, candidate.version)
            specs.check(spec, candidate.version, evaluator)
        except Exception as exc:  # any load failure: record it, keep serving the old version
            message = str(exc) if isinstance(exc, ServingError) else f"{type(exc).__name__}: {exc}"
            same = failed is not None and failed.version == candidate.version
            attempts = failed.attempts + 1 if failed is not None and same else 1
            skip = None if isinstance(exc, UnsupportedModel) else min(2 ** (attempts - 1), MAX_SKIPPED_POLLS)
            self._failures[kind] = Failure(candidate.version, message, _now(), attempts, skip)
            log.error(
                "%s version %s not loaded, still serving %s: %s",
                spec.name,
                candidate.version,
                current.version if current else "nothing",
                message,
            )
            return
        self._failures.pop(kind, None)
        self._swap(
            kind, Loaded(spec, candidate.version, candidate.run_id, candidate.stage, _now(), evaluator)
        )
        log.info("%s: now serving version %s", spec.name, candidate.version)

    def _load(self, spec: Spec, version: str) -> Evaluator:
        assert self.registry is not None
        if self.settings.serving_engine == "spark":
            return SparkEvaluator(f"models:/{spec.name}/{version}", self.settings.tracking_uri)
        return self.registry.numpy_evaluator(spec.name, version)

    def _swap(self, kind: str, loaded: Loaded) -> None:
        self._loaded = {**self._loaded, kind: loaded}  # one reference assignment: atomic for readers

    # -- following the registry in the background (serving.following) ---------------------------
    def start(self) -> None:
        """Check now, then every poll interval and whenever nudged or signalled, until `stop()`."""
        if self._follower is None:
            self._follower = Follower(self.refresh, self.settings.poll_interval_s, self.settings.run_dir)
            self._follower.start()

    def wait_checked(self, timeout_s: float) -> bool:
        """Block until the first registry check has finished (models loaded, or failed), or the timeout."""
        return self._checked.wait(timeout_s)

    def nudge(self) -> None:
        """The registry changed (a webhook said so): check it now, in the follower if one runs."""
        if self._follower is not None:
            self._follower.nudge()
        else:
            self.refresh()

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._follower is not None:
            self._follower.stop(timeout_s)
            self._follower = None
