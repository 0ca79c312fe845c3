"""PNG figures logged beside each run, so the MLflow UI shows how a model fails, not only a number."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from training.metrics import roc_auc  # noqa: E402
from training.specs import ModelSpec  # noqa: E402

MAX_POINTS = 5000  # scatter plots of millions of points say nothing more and take long


def _sample(df: pd.DataFrame) -> pd.DataFrame:
    return df.sample(MAX_POINTS, random_state=0).sort_index() if len(df) > MAX_POINTS else df


def _regression(actual: pd.Series, predicted: pd.Series, title: str) -> dict[str, Figure]:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(actual, predicted, s=3, alpha=0.4)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="black", linewidth=1)
    ax.set(xlabel=f"actual {title}", ylabel=f"predicted {title}", title=f"{title}: predicted vs actual")
    res, ax2 = plt.subplots(figsize=(6, 4))
    ax2.scatter(predicted, predicted - actual, s=3, alpha=0.4)
    ax2.axhline(0, color="black", linewidth=1)
    ax2.set(xlabel=f"predicted {title}", ylabel="residual", title=f"{title}: residuals")
    name = title.lower()
    return {f"plots/{name}_predicted_vs_actual.png": fig, f"plots/{name}_residuals.png": res}


def _classification(test: pd.DataFrame) -> dict[str, Figure]:
    label, predicted = test["label"].to_numpy(), test["prediction"].to_numpy()
    matrix = np.array([[np.sum((label == a) & (predicted == p)) for p in (0, 1)] for a in (0, 1)])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(matrix, cmap="Blues")
    for (a, p), count in np.ndenumerate(matrix):
        ax.text(p, a, str(count), ha="center", va="center")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["Down", "Up"], yticklabels=["Down", "Up"])
    ax.set(xlabel="predicted", ylabel="actual", title="trend: confusion matrix")
    order = np.argsort(-test["probability_up"].to_numpy())
    hits = label[order]
    tpr = np.concatenate([[0], np.cumsum(hits) / max(hits.sum(), 1)])
    fpr = np.concatenate([[0], np.cumsum(1 - hits) / max((1 - hits).sum(), 1)])
    roc, ax2 = plt.subplots(figsize=(4, 4))
    ax2.plot(fpr, tpr, label=f"AUC {roc_auc(label, test['probability_up'].to_numpy()):.3f}")
    ax2.plot([0, 1], [0, 1], color="grey", linestyle="--")
    ax2.set(xlabel="false positive rate", ylabel="true positive rate", title="trend: ROC")
    ax2.legend(loc="lower right")
    return {"plots/confusion_matrix.png": fig, "plots/roc.png": roc}


def _importances(spec: ModelSpec, importances: dict[str, list[float]]) -> dict[str, Figure]:
    fig, ax = plt.subplots(figsize=(5, 3))
    width = 0.8 / max(len(importances), 1)
    x = np.arange(len(spec.features))
    for i, (target, values) in enumerate(importances.items()):
        ax.bar(x + i * width, values, width, label=target)
    ax.set_xticks(x + width * (len(importances) - 1) / 2, spec.features)
    ax.set(ylabel="importance", title="forest feature importances")
    ax.legend()
    return {"plots/feature_importances.png": fig}


def figures(spec: ModelSpec, test: pd.DataFrame, importances: dict[str, list[float]]) -> dict[str, Figure]:
    """Artifact path → figure for this model's test rows; the caller logs and closes them."""
    sample = _sample(test)
    if spec.kind == "regression":
        return _regression(sample[spec.labels[0]], sample["prediction"], spec.labels[0])
    if spec.kind == "high_low":
        out = _regression(sample["High"], sample["prediction_high"], "High")
        out.update(_regression(sample["Low"], sample["prediction_low"], "Low"))
        out.update(_importances(spec, importances))
        return out
    return _classification(test)
