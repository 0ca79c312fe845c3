"""The three models as data: what each reads, predicts, is judged by and is registered as.

Training, promotion and serving all read these specs, so the facts live once. The module imports no
Spark: the Spark-free facts are plain frozen dataclasses, and `build_pipeline` imports pyspark only
when called, so the gateway (which never imports pyspark) can use the names and features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pyspark.ml import Pipeline

Kind = Literal["regression", "high_low", "classification"]
REGRESSION_METRICS = ("rmse", "mae", "r2")
CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc", "log_loss")
EXPERIMENT = "btcflow"

# high_low learns the candle's shape, not its price level: forests on Open and Volume predict how far above
# the Open the High reaches and how far below it the Low falls, as fractions of the Open (never negative; the
# Low's at most 1). A time-ordered test set always lies outside the price range it was trained on, where a
# tree can only repeat its edge leaf; a fraction of the Open holds at any level. The pipeline maps them back
# to prices itself (CANDLE below), so the Spark flavour and `mlflow models serve` answer prices and
# High >= Open >= Low >= 0 holds for every input, by construction.
SPREADS = ("high_spread", "low_spread")  # (High - Open) / Open and (Open - Low) / Open, the forests' labels
CANDLE = (
    "SELECT *, Open + Open * GREATEST(prediction_high_spread, 0D) AS prediction_high, "
    "Open - Open * LEAST(GREATEST(prediction_low_spread, 0D), 1D) AS prediction_low FROM __THIS__"
)


@dataclass(frozen=True)
class ModelSpec:
    """One model: inputs, targets, estimator defaults, how it is judged and its registry name."""

    name: str
    registered_name: str
    kind: Kind
    features: tuple[str, ...]
    labels: tuple[str, ...]  # the columns the model predicts ("label" is derived for trend)
    targets: tuple[str, ...] = ()  # what the estimators learn when it is not `labels` (high_low: SPREADS)
    params: dict[str, Any] = field(default_factory=dict)  # estimator defaults, Spark param names
    metrics: tuple[str, ...] = REGRESSION_METRICS
    primary_metric: str = "rmse"
    higher_is_better: bool = False
    baseline: str = ""  # what the naive baseline predicts, for humans (run description, README)
    # The fewest rows a selection must hold, checked against the manifest's counts before Spark starts:
    # ten give the time split (the latest 20% by default) 2 rows to test on and 8 to fit, the floor at
    # which every estimator fits and every metric is defined (data.time_cutoff refuses fewer usable rows).
    min_rows: int = 10

    def better(self, a: float, b: float) -> bool:
        """Whether metric value `a` beats `b` for this model's primary metric (strictly)."""
        return a > b if self.higher_is_better else a < b


SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="close",
            registered_name="btc-close",
            kind="regression",
            features=("Timestamp",),
            labels=("Close",),
            params={"maxIter": 100, "regParam": 0.0, "elasticNetParam": 0.0},
            baseline="the last Close of the training rows",
            min_rows=10,  # a line needs two points, r2 two test rows: the time split's floor covers both
        ),
        ModelSpec(
            name="high_low",
            registered_name="btc-high-low",
            kind="high_low",
            features=("Open", "Volume"),
            labels=("High", "Low"),
            targets=SPREADS,
            # Small, shallow forests: two inputs need few splits, and a 2.33M-row fit of both forests
            # stays within a few minutes on 2 local cores (bench/train.py). Cost ~ rows x trees x depth.
            params={"numTrees": 10, "maxDepth": 6, "maxBins": 32, "subsamplingRate": 1.0, "seed": 42},
            metrics=tuple(f"{m}_{t}" for t in ("high", "low") for m in REGRESSION_METRICS),
            primary_metric="rmse",  # the mean of rmse_high and rmse_low
            baseline="Open for both High and Low (a candle of no range)",
            min_rows=10,  # a forest fits a handful of rows; the time split's floor decides
        ),
        ModelSpec(
            name="trend",
            registered_name="btc-trend",
            kind="classification",
            features=("Open", "Close", "Volume"),
            labels=("label",),
            params={"maxIter": 100, "regParam": 0.0, "elasticNetParam": 0.0},
            metrics=CLASSIFICATION_METRICS,
            primary_metric="roc_auc",
            higher_is_better=True,
            baseline="the training set's majority class (its class share as probability for log_loss)",
            min_rows=11,  # the last minute has no next minute to label it: ten labelled rows need eleven
        ),
    )
}

# Main hyperparameters the CLI and MLproject expose, mapped to Spark param names.
HYPERPARAMETERS = {
    "num_trees": "numTrees",
    "max_depth": "maxDepth",
    "reg_param": "regParam",
    "max_iter": "maxIter",
}


def get_spec(name: str) -> ModelSpec:
    """The spec for a model name; training.errors.BadInput for an unknown one."""
    from core.errors import BadInput

    try:
        return SPECS[name]
    except KeyError:
        raise BadInput(f"unknown model {name!r}; choose from {', '.join(SPECS)}") from None


def resolve_params(spec: ModelSpec, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Spec defaults updated by the overrides this model's estimator has (others do not apply)."""
    params = dict(spec.params)
    for key, value in (overrides or {}).items():
        spark_name = HYPERPARAMETERS.get(key, key)
        if value is not None and spark_name in params:
            params[spark_name] = type(params[spark_name])(value)
    return params


def build_pipeline(spec: ModelSpec, params: dict[str, Any]) -> Pipeline:
    """The unfitted Spark ML pipeline of models.md (pyspark imported here, not at module import)."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import SQLTransformer, VectorAssembler
    from pyspark.ml.regression import LinearRegression, RandomForestRegressor

    assembler = VectorAssembler(inputCols=list(spec.features), outputCol="features")
    if spec.kind == "regression":
        regression = LinearRegression(
            featuresCol="features", labelCol=spec.labels[0], predictionCol="prediction", **params
        )
        return Pipeline(stages=[assembler, regression])
    if spec.kind == "high_low":
        forests = [
            RandomForestRegressor(
                featuresCol="features", labelCol=target, predictionCol=f"prediction_{target}", **params
            )
            for target in spec.targets
        ]
        candle = SQLTransformer(statement=CANDLE)  # spreads back to prices: prediction_high, prediction_low
        # One `prediction` vector [high, low] so the Spark pyfunc (and `mlflow models serve`) answers both.
        both = VectorAssembler(inputCols=["prediction_high", "prediction_low"], outputCol="prediction")
        return Pipeline(stages=[assembler, *forests, candle, both])
    estimator = LogisticRegression(
        featuresCol="features",
        labelCol="label",
        predictionCol="prediction",
        probabilityCol="probability",
        **params,
    )
    return Pipeline(stages=[assembler, estimator])
