"""Kafka message values → rows: the contract's JSON object with the six Kaggle columns, all finite numbers.

The fast path decodes a whole poll with orjson and one numpy conversion; only a poll that holds a bad
message pays for checking message by message, and each bad one is kept with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from operator import itemgetter

import numpy as np
import orjson

from core.dataset import COLUMNS

_FIELDS = itemgetter(*COLUMNS)
_NUMBER = (float, int)


@dataclass(frozen=True)
class Rejected:
    """A message that is not a row: kept with where it came from and why."""

    partition: int
    offset: int
    key: str | None
    value: str | None
    reason: str


def text(raw: bytes | None, limit: int = 1000) -> str | None:
    return None if raw is None else raw[:limit].decode("utf-8", errors="replace")


def reason(value: bytes | None) -> str | None:
    """Why `value` is not a row (None: it is one)."""
    if value is None:
        return "empty value (tombstone)"
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if not isinstance(obj, dict):
        return f"not a JSON object but {type(obj).__name__}"
    for name in COLUMNS:
        if name not in obj:
            return f"missing field {name}"
        field = obj[name]
        if type(field) not in _NUMBER:
            return f"field {name} is not a number: {field!r}"[:200]
        if not np.isfinite(float(field)):
            return f"field {name} is not finite"
    return None


def parse_values(values: list[bytes | None]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Message values → (rows as an (n, 6) float64 array, [(index, reason)] of those that are not rows)."""
    try:
        flat = list(chain.from_iterable(map(_FIELDS, map(orjson.loads, values))))  # type: ignore[arg-type]
        if set(map(type, flat)) <= {float, int}:
            rows = np.array(flat, dtype=np.float64).reshape(-1, len(COLUMNS))
            if np.isfinite(rows).all():
                return rows, []
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
        pass
    good: list[tuple[float, ...]] = []
    bad: list[tuple[int, str]] = []
    for i, value in enumerate(values):
        why = reason(value)
        if why is None:
            good.append(_FIELDS(orjson.loads(value)))  # type: ignore[arg-type]
        else:
            bad.append((i, why))
    return np.array(good, dtype=np.float64).reshape(-1, len(COLUMNS)), bad
