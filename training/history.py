"""Every promotion of a model, kept by the registry itself: one registered-model tag per promotion.

Tags on the registered model live in the same store as the stage and alias they describe (SQLite, or
PostgreSQL behind `mlflow server`, over REST alike), need no other service, and all come back in one
call. The key `btcflow.promotion.<UTC yyyymmddThhmmss.ffffffZ>` sorts by time and uses only characters
MLflow's tag-name check allows everywhere (no colon). The value is compact JSON of at most 5000
characters: MLflow validates registered-model tag values up to 100,000, but its SQL schema keeps them in
a VARCHAR(5000) that PostgreSQL enforces.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("training")
PREFIX = "btcflow.promotion."
MAX_VALUE = 5000  # registered_model_tags.value is VARCHAR(5000) in MLflow's SQL schema
KEY_TIME = "%Y%m%dT%H%M%S.%fZ"
BY = ("hand", "gate", "rollback", "monitor")  # who moved Production: promote --version, --best, --rollback


@dataclass(frozen=True)
class Record:
    """One move of Production: when, by what, from which version to which, and what was compared."""

    to: str
    by: str
    previous: str | None  # the version that was Production before (None: there was none)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    metric: str | None = None  # the gate's primary metric, and its value per compared version
    values: dict[str, float] = field(default_factory=dict)
    baseline: float | None = None  # the naive baseline's value on the same window
    rows: int | None = None  # the window's size

    @property
    def key(self) -> str:
        return PREFIX + self.at.astimezone(UTC).strftime(KEY_TIME)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, `from` spelled as users read it; empty fields left out."""
        out = {"at": self.at.astimezone(UTC).isoformat(), "by": self.by, "from": self.previous, "to": self.to}
        out |= {k: v for k, v in asdict(self).items() if k not in (*out, "previous")}
        return {k: v for k, v in out.items() if v not in (None, {})}

    def to_json(self) -> str:
        text = json.dumps(self.as_dict(), separators=(",", ":"))
        if len(text) > MAX_VALUE:  # only with absurdly many compared versions: keep the two that matter
            kept = {v: x for v, x in self.values.items() if v in (self.to, self.previous)}
            text = json.dumps({**self.as_dict(), "values": kept}, separators=(",", ":"))
        return text

    @classmethod
    def from_json(cls, text: str) -> Record | None:
        """The record a tag holds; None (with a warning) for one edited by hand into something else."""
        try:
            raw = json.loads(text)
            return cls(
                to=str(raw["to"]),
                by=str(raw["by"]),
                previous=str(raw["from"]) if raw.get("from") is not None else None,
                at=datetime.fromisoformat(raw["at"]),
                metric=raw.get("metric"),
                values={str(k): float(v) for k, v in raw.get("values", {}).items()},
                baseline=float(raw["baseline"]) if raw.get("baseline") is not None else None,
                rows=int(raw["rows"]) if raw.get("rows") is not None else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("promotion record %r unreadable, skipped: %s", text[:80], exc)
            return None


def write(client: MlflowClient, name: str, record: Record) -> None:
    client.set_registered_model_tag(name, record.key, record.to_json())


def records(tags: dict[str, str]) -> list[Record]:
    """The promotion records among a registered model's tags, newest first."""
    found = [Record.from_json(value) for key, value in tags.items() if key.startswith(PREFIX)]
    return sorted((r for r in found if r is not None), key=lambda r: r.at, reverse=True)


def rollback_target(history: list[Record], current: str) -> str | None:
    """The version Production held before `current`, by the newest record that made `current` Production.

    Rollbacks are skipped: after 3 → 2 by rollback, a second rollback follows the promotion that made
    v2 Production in the first place (back to v1), rather than toggling back to v3.
    """
    for record in history:
        if record.to == current and record.by != "rollback":
            return record.previous
    return None
