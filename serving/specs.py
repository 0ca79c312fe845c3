"""The served models as specs, and the check a version must pass before it may answer requests.

Names, input columns and output shapes come from training.specs (plain data: imports neither pyspark
nor any other training module). A version registered under a model's name but reading other columns,
or answering another shape, would fail every request (a KeyError, a 500): it is refused when it loads
instead, as UnsupportedModel, and the version before it keeps serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.errors import UnsupportedModel
from serving.evaluate import Evaluator
from serving.stages import Candle
from training.specs import SPECS as MODEL_SPECS


@dataclass(frozen=True)
class Spec:
    """One served model: its registered name, the request fields and the Kaggle columns they feed."""

    kind: str
    name: str
    inputs: dict[str, str]  # request field -> model input column
    output: str  # training.specs' kind: regression (a number), high_low ([high, low]), classification


# The gateway's own API: the request field that carries each model input column.
REQUEST_FIELDS = {
    column: column.lower() for column in ("Timestamp", "Open", "High", "Low", "Close", "Volume")
}

SPECS: dict[str, Spec] = {
    kind: Spec(
        kind, spec.registered_name, {REQUEST_FIELDS[column]: column for column in spec.features}, spec.kind
    )
    for kind, spec in MODEL_SPECS.items()
}

# Probe values: plausible and finite for every model (a Timestamp inside the request range).
PROBE = {"Timestamp": 1.4e9, "Open": 100.0, "High": 101.0, "Low": 99.0, "Close": 100.5, "Volume": 2.0}


def _is_number(v: Any) -> bool:
    return isinstance(v, float | int) and not isinstance(v, bool)


def _is_pair(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v)


def check(spec: Spec, version: str, evaluator: Evaluator) -> None:
    """Refuse (UnsupportedModel) a version whose inputs or outputs differ from its model's spec.

    Inputs: the columns the pipeline reads (the numpy engine knows them from its stages; the spark
    engine does not say, and the probe below finds a missing column). Outputs: one probe row and a
    probe batch of two, through both evaluation paths: `prediction` a number (close, trend) or a
    [high, low] pair around the Open (high_low); trend also a `probability` pair. A high_low pipeline
    must end in training's candle stage, the one that makes every answer a coherent candle.
    """
    wanted = sorted(spec.inputs.values())
    label = f"{spec.name} version {version}"
    if evaluator.inputs is not None and sorted(evaluator.inputs) != wanted:
        raise UnsupportedModel(
            f"{label} reads columns {sorted(evaluator.inputs)}, but {spec.name} takes {wanted}: not served"
        )
    stages = getattr(getattr(evaluator, "pipeline", None), "stages", None)  # the numpy engine knows them
    if spec.output == "high_low" and stages is not None and not any(isinstance(s, Candle) for s in stages):
        raise UnsupportedModel(
            f"{label} predicts price levels without high_low's candle stage, so High >= Open >= Low is "
            "not guaranteed (trained before btcflow learned the candle's shape): not served; train a new one"
        )
    for rows in (1, 2):
        try:
            out = evaluator.outputs({c: [PROBE[c]] * rows for c in wanted})
        except Exception as exc:
            raise UnsupportedModel(
                f"{label} cannot evaluate a row of {wanted}: {type(exc).__name__}: {exc}"
            ) from exc
        prediction = out.get("prediction")
        if not isinstance(prediction, list) or len(prediction) != rows:
            raise UnsupportedModel(f"{label} gives no `prediction` per row: not served")
        pair = spec.output == "high_low"
        if not all((_is_pair if pair else _is_number)(p) for p in prediction):
            shape = "a [high, low] vector" if pair else "a number"
            raise UnsupportedModel(f"{label}: `prediction` is not {shape} ({prediction[0]!r}): not served")
        if pair and not all(high >= PROBE["Open"] >= low for high, low in prediction):
            raise UnsupportedModel(
                f"{label}: answers High {prediction[0][0]!r} and Low {prediction[0][1]!r} for "
                f"Open {PROBE['Open']}, not a candle around it: not served"
            )
        if spec.output == "classification":
            probability = out.get("probability")
            if not isinstance(probability, list) or not all(_is_pair(p) for p in probability):
                raise UnsupportedModel(f"{label}: no [P(Down), P(Up)] `probability`: not served")
