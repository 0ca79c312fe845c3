"""Metrics and naive baselines computed with numpy on the same test rows, so both are comparable.

The same functions judge a fresh fit (train.py) and a registered version on a common window
(registry.py), so "better" means the same thing everywhere.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.specs import ModelSpec

EPS = 1e-15


def regression(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    err = predicted - actual
    ss_tot = float(np.sum((actual - actual.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else 0.0,
    }


def roc_auc(label: np.ndarray, score: np.ndarray) -> float:
    """Area under ROC via the rank statistic (ties share ranks); 0.5 when one class is absent."""
    positives = int(label.sum())
    negatives = len(label) - positives
    if positives == 0 or negatives == 0:
        return 0.5
    ranks = pd.Series(score).rank(method="average").to_numpy()
    return float((ranks[label == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def classification(label: np.ndarray, predicted: np.ndarray, probability_up: np.ndarray) -> dict[str, float]:
    tp = float(np.sum((predicted == 1) & (label == 1)))
    fp = float(np.sum((predicted == 1) & (label == 0)))
    fn = float(np.sum((predicted == 0) & (label == 1)))
    p = np.clip(probability_up, EPS, 1 - EPS)
    return {
        "accuracy": float(np.mean(predicted == label)),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0,
        "roc_auc": roc_auc(label, probability_up),
        "log_loss": float(-np.mean(label * np.log(p) + (1 - label) * np.log(1 - p))),
    }


def evaluate(spec: ModelSpec, test: pd.DataFrame) -> dict[str, float]:
    """The spec's metrics on scored test rows (columns: labels, prediction(s), probability_up)."""
    if spec.kind == "regression":
        return regression(test[spec.labels[0]].to_numpy(), test["prediction"].to_numpy())
    if spec.kind == "high_low":
        out: dict[str, float] = {}
        for target in ("high", "low"):
            scores = regression(test[target.capitalize()].to_numpy(), test[f"prediction_{target}"].to_numpy())
            out.update({f"{k}_{target}": v for k, v in scores.items()})
        out["rmse"] = (out["rmse_high"] + out["rmse_low"]) / 2
        return out
    return classification(
        test["label"].to_numpy(), test["prediction"].to_numpy(), test["probability_up"].to_numpy()
    )


def baseline(spec: ModelSpec, train: pd.DataFrame | dict[str, float], test: pd.DataFrame) -> dict[str, float]:
    """`baseline_<metric>`: what doing nothing clever scores, from the inputs and training data only.

    `train` needs only `last_close` (close) or `positive_rate` (trend), as `train.train_one` passes them.
    """
    naive = test.copy()
    if spec.kind == "regression":
        naive["prediction"] = float(train["last_close"])
    elif spec.kind == "high_low":
        naive["prediction_high"] = naive["Open"]
        naive["prediction_low"] = naive["Open"]
    else:
        rate = float(train["positive_rate"])
        naive["prediction"] = 1.0 if rate > 0.5 else 0.0
        naive["probability_up"] = rate
    return {f"baseline_{k}": v for k, v in evaluate(spec, naive).items()}
