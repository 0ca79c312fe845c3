"""A version registered under a model's name but unlike its spec is refused when it loads, not per request."""

from __future__ import annotations

from fastapi.testclient import TestClient

from bench import spark_models as sm
from serving.app import create_app
from serving.models import Gateway
from serving.settings import ServingSettings
from tests.serving.conftest import Store


def close_trained_on_open(store: Store) -> str:
    """btc-close fitted on Open instead of Timestamp (a real Spark pipeline), registered in this store."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.regression import LinearRegression

    frame = store.template.frame
    spark = store.template.spark
    stages = [
        VectorAssembler(inputCols=["Open"], outputCol="features"),
        LinearRegression(featuresCol="features", labelCol="Close", predictionCol="prediction"),
    ]
    model = Pipeline(stages=stages).fit(spark.createDataFrame(frame[sm.KAGGLE]))  # type: ignore[attr-defined]
    return sm.log_and_register(model, "close", frame, store.uri)  # type: ignore[arg-type]


def test_a_close_model_reading_open_is_refused_at_load_and_the_old_one_serves(store: Store) -> None:
    config = ServingSettings(tracking_uri=store.uri, poll_interval_s=3600)
    gateway = Gateway(config)
    gateway.refresh()
    client = TestClient(create_app(config, gateway))
    before = client.get("/predict/close", params={"timestamp": 1325412060.0})
    assert before.status_code == 200
    wrong = close_trained_on_open(store)
    sm.promote(store.uri, "close", wrong)
    for _ in range(3):  # refused once, then not retried by the poller (only POST /admin/reload would)
        gateway.refresh()
    close = next(m for m in client.get("/models").json()["models"] if m["kind"] == "close")
    assert close["version"] == store.template.versions["close"]
    error = close["last_error"]
    assert error["version"] == wrong and error["retry"] == "only on POST /admin/reload"
    assert (
        f"btc-close version {wrong} reads columns ['Open'], but btc-close takes ['Timestamp']"
        in (error["message"])
    )
    after = client.get("/predict/close", params={"timestamp": 1325412060.0})
    assert after.status_code == 200 and after.json() == before.json()
    batch = client.post("/predict/close", json={"rows": [{"timestamp": 1325412060.0}] * 3})
    assert batch.status_code == 200


def high_low_on_price_levels(store: Store) -> str:
    """btc-high-low as trained before it learned the candle's shape: forests on High and Low themselves."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.regression import RandomForestRegressor

    frame = store.template.frame
    spark = store.template.spark
    stages = [
        VectorAssembler(inputCols=["Open", "Volume"], outputCol="features"),
        *(
            RandomForestRegressor(
                featuresCol="features", labelCol=c, predictionCol=f"prediction_{c.lower()}", numTrees=2
            )
            for c in ("High", "Low")
        ),
        VectorAssembler(inputCols=["prediction_high", "prediction_low"], outputCol="prediction"),
    ]
    model = Pipeline(stages=stages).fit(spark.createDataFrame(frame[sm.KAGGLE]))  # type: ignore[attr-defined]
    return sm.log_and_register(model, "high_low", frame, store.uri)  # type: ignore[arg-type]


def test_a_high_low_on_price_levels_is_refused_and_the_candle_one_serves(store: Store) -> None:
    config = ServingSettings(tracking_uri=store.uri, poll_interval_s=3600)
    gateway = Gateway(config)
    gateway.refresh()
    old = high_low_on_price_levels(store)
    sm.promote(store.uri, "high_low", old)
    gateway.refresh()
    high_low = next(m for m in gateway.status()["models"] if m["kind"] == "high_low")
    assert high_low["version"] == store.template.versions["high_low"]
    assert high_low["last_error"]["version"] == old
    assert "without high_low's candle stage" in high_low["last_error"]["message"]
