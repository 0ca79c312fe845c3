"""The gateway's core, free of HTTP: which versions are Production, loading them, predicting by model.

A `Gateway` holds one immutable `Loaded` per model kind in a dict it replaces whole, never mutates: a request
reads the entry once and is answered wholly by that version, even while the poller swaps in a new one.
The poller thread asks the registry every `poll_interval_s`, loads a new Production version beside the old
one and only then swaps; a version that fails to load is recorded (shown by /models) and the old one keeps
serving. When the registry answers that a model has no Production version any more, it is dropped (its
routes answer 503). Only the poller (or a forced reload, under the same lock) talks to MLflow.
"""

from __future__ import annotations

import gc
import logging
import math
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serving import sparkml
from serving.errors import (
    BadInput,
    ModelUnavailable,
    NotReady,
    RegistryUnavailable,
    ServingError,
    UnsupportedModel,
)
from serving.settings import ServingSettings
from training.specs import PRODUCTION_ALIAS, PRODUCTION_STAGE
from training.specs import SPECS as MODEL_SPECS

log = logging.getLogger("serving")

MAX_SKIPPED_POLLS = 30  # a version that keeps failing to load is retried at least every 31 polls


@dataclass(frozen=True)
class Spec:
    """One served model: its registered name, the request fields and the Kaggle columns they feed."""

    kind: str
    name: str
    inputs: dict[str, str]  # request field -> model input column


# The gateway's own API: the request field that carries each model input column. Names and input columns
# come from training.specs (plain data, imports neither pyspark nor any other training module).
REQUEST_FIELDS = {
    column: column.lower() for column in ("Timestamp", "Open", "High", "Low", "Close", "Volume")
}

SPECS: dict[str, Spec] = {
    kind: Spec(kind, spec.registered_name, {REQUEST_FIELDS[column]: column for column in spec.features})
    for kind, spec in MODEL_SPECS.items()
}


class Evaluator(Protocol):
    def outputs(self, columns: dict[str, Sequence[float]]) -> dict[str, list[Any]]:
        """`prediction` (and `probability` for a classifier) per row, for input columns of equal length."""
        ...


class NumpyEvaluator:
    """The Spark pipeline read from its files, evaluated in-process: floats for one row, numpy for many."""

    def __init__(self, model_dir: Path) -> None:
        self.pipeline = sparkml.load(model_dir)

    def outputs(self, columns: dict[str, Sequence[float]]) -> dict[str, list[Any]]:
        wanted = ("prediction", "probability")
        if all(len(v) == 1 for v in columns.values()):
            row = self.pipeline.transform_row({k: float(v[0]) for k, v in columns.items()})
            return {c: [row[c]] for c in wanted if c in row}
        cols = self.pipeline.transform({k: np.asarray(v, dtype=np.float64) for k, v in columns.items()})
        return {c: cols[c].tolist() for c in wanted if c in cols}


class SparkEvaluator:
    """MLflow's Spark flavour: the real PipelineModel in a local JVM (imports pyspark only here)."""

    def __init__(self, model_uri: str, tracking_uri: str) -> None:
        import mlflow.spark
        from pyspark.sql import SparkSession

        self.spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.model = mlflow.spark.load_model(model_uri)

    def outputs(self, columns: dict[str, Sequence[float]]) -> dict[str, list[Any]]:
        import pandas as pd

        frame = self.spark.createDataFrame(
            pd.DataFrame({k: [float(x) for x in v] for k, v in columns.items()})
        )
        result = self.model.transform(frame)
        wanted = [c for c in ("prediction", "probability") if c in result.columns]
        rows = result.select(*wanted).collect()
        return {
            c: [r[c].toArray().tolist() if hasattr(r[c], "toArray") else r[c] for r in rows] for c in wanted
        }


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


@dataclass(frozen=True)
class Candidate:
    """What the registry says is Production now."""

    version: str
    run_id: str
    stage: str


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


class Registry:
    """MLflow's registry, asked for Production versions and their files (imports mlflow on first use)."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client: Any = None

    def _mlflow(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def production(self, name: str) -> Candidate | None:
        """The version in stage Production, else the one with alias `production`, else None."""
        from mlflow.exceptions import MlflowException

        client = self._mlflow()
        try:
            with warnings.catch_warnings():  # stages are deprecated in MLflow 3, still the contract here
                warnings.simplefilter("ignore")
                staged = client.get_latest_versions(name, stages=[PRODUCTION_STAGE])
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise RegistryUnavailable(f"MLflow registry at {self.tracking_uri}: {exc.message}") from exc
        except Exception as exc:  # sqlalchemy / connection errors arrive untyped
            raise RegistryUnavailable(f"MLflow registry at {self.tracking_uri}: {exc}") from exc
        if staged:
            mv = max(staged, key=lambda v: int(v.version))
            return Candidate(str(mv.version), mv.run_id or "", PRODUCTION_STAGE)
        try:
            mv = client.get_model_version_by_alias(name, PRODUCTION_ALIAS)
        except MlflowException as exc:
            # no such alias: INVALID_PARAMETER_VALUE from the SQL store, RESOURCE_DOES_NOT_EXIST from REST;
            # anything else is the store failing, never a reason to stop serving
            if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
                return None
            raise RegistryUnavailable(f"MLflow registry at {self.tracking_uri}: {exc.message}") from exc
        except Exception as exc:
            raise RegistryUnavailable(f"MLflow registry at {self.tracking_uri}: {exc}") from exc
        return Candidate(str(mv.version), mv.run_id or "", f"alias:{PRODUCTION_ALIAS}")

    def download(self, name: str, version: str, dst: Path) -> Path:
        """Copy the version's MLflow model directory (MLmodel, sparkml/...) into `dst`."""
        import mlflow.artifacts

        source = self._mlflow().get_model_version_download_uri(name, version)
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(dst), tracking_uri=self.tracking_uri
            )
        )


def forbid_jvm_imports() -> None:
    """Make `import pyspark` / `import py4j` fail in this process, as if pyspark were not installed.

    `import mlflow` tries `import pyspark` at module level (only to know whether it may use Spark types);
    the numpy engine's process needs neither, so its entry point calls this before anything imports
    mlflow. Only for a dedicated gateway process: never inside a test run that also fits Spark models.
    """
    for name in ("pyspark", "py4j"):
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # the documented "not importable" marker


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
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

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
        return self.status()

    def _refresh_one(self, kind: str, spec: Spec, force: bool) -> None:
        assert self.registry is not None
        candidate = self.registry.production(spec.name)
        current = self._loaded.get(kind)
        if candidate is None:  # the registry answered: no Production version (any more). Contract: 503
            if current is not None:
                self._loaded = {k: v for k, v in self._loaded.items() if k != kind}
                log.warning(
                    "%s: no Production version any more, stopped serving version %s",
                    spec.name,
                    current.version,
                )
            return
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
        tmp = Path(tempfile.mkdtemp(prefix=f"btcflow-{spec.kind}-v{version}-"))
        try:  # everything is read into memory: the download can go right after
            return NumpyEvaluator(self.registry.download(spec.name, version, tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _swap(self, kind: str, loaded: Loaded) -> None:
        self._loaded = {**self._loaded, kind: loaded}  # one reference assignment: atomic for readers

    # -- the poller ------------------------------------------------------------------------------
    def start(self) -> None:
        """Check now and then every poll interval, in a daemon thread, until `stop()`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="registry-poller", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        first = True
        while True:
            try:
                self.refresh()
            except Exception:  # never let the poller die: the next tick tries again
                log.exception("registry check failed")
            if first:  # MLflow, SQLAlchemy and the models are loaded now: keep their objects out of gc passes
                gc.freeze()
                first = False
            if self._stop.wait(self.settings.poll_interval_s):
                return

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
