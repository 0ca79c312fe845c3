"""The gateway's core, free of HTTP: predicting by model kind with the version each is served by now.

`Gateway` is a serving.loading.Loader (which version each kind is served by, kept as the registry says)
that answers: a request reads the served entry once, without a lock, and is answered wholly by that
version, even while a refresh swaps in a new one. It also runs the follower (serving.following) that
refreshes it in the background, and says what it serves (/models) and whether all is loaded (/ready).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.secrets import mask_uri
from serving.errors import BadField, ModelUnavailable, NotReady
from serving.following import Follower
from serving.loading import Loaded, Loader
from serving.registry import Registry
from serving.specs import SPECS

__all__ = ["SPECS", "Gateway", "Loaded", "Registry"]


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


@dataclass
class Gateway(Loader):
    """Resolve, load and swap the three Production models; predict by model kind."""

    _follower: Follower | None = None

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

        An answer that is not a finite number (a model overflowing on extreme inputs) is BadField naming
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
            raise BadField(
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
                shown = failures[kind].shown()
                entry["last_error"] = {**shown, "message": mask_uri(shown["message"])}
            models.append(entry)
        return {
            "pid": os.getpid(),  # which worker process of the gateway answered
            "engine": self.settings.serving_engine,
            "tracking_uri": mask_uri(self.settings.tracking_uri),  # any caller reads this: no password
            "checked_at": self._checked_at,
            "registry_error": self._registry_error and mask_uri(self._registry_error),
            "models": models,
        }

    # -- following the registry (serving.loading), in the background (serving.following) -----------
    def refresh(self, force: bool = False) -> dict[str, Any]:
        """Check the registry now (serving.loading: `force` retries failed versions); returns `status()`."""
        self.check_registry(force)
        return self.status()

    def start(self) -> None:
        """Check now, then every poll interval and whenever nudged or signalled, until `stop()`."""
        if self._follower is None:
            self._follower = Follower(self.refresh, self.settings.poll_interval_s, self.settings.run_dir)
            self._follower.start()

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
