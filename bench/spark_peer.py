"""The ingest benchmark's peer: what a Spark user would pick instead of btcflow's consumer group, Spark
Structured Streaming reading the topic (Kafka source) into Parquet files (file sink), the value's JSON
parsed into the six Kaggle columns as btcflow's batches hold them.

A helper of bench/ingest.py (run alone it does nothing). The Kafka source's jars are resolved by Maven
(services/spark/kafka_source.py) and given to Spark as `spark.jars`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from services.spark.kafka_source import setup_kafka_source

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "Timestamp DOUBLE, Open DOUBLE, High DOUBLE, Low DOUBLE, Close DOUBLE, Volume DOUBLE"


@dataclass(frozen=True)
class PeerRun:
    rows: int  # counted in the Parquet files the query wrote
    seconds: float  # from the query's start to its termination

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def start_session(master: str = "local[*]") -> tuple[Any, str, float]:
    """(a quiet SparkSession with the Kafka source on its class path, the connector's version, the
    seconds its JVM took to start)."""
    import pyspark
    from pyspark.sql import SparkSession

    version, jars = setup_kafka_source(REPO / ".cache" / "spark-kafka", pyspark.__version__)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    started = time.monotonic()
    spark = (
        SparkSession.builder.master(master)
        .appName("btcflow-bench-peer")
        .config("spark.jars", ",".join(str(j) for j in jars))
        .config("spark.driver.memory", "1g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark, version, time.monotonic() - started


def read_topic(spark: Any, bootstrap: str, topic: str, folder: Path) -> PeerRun:
    """The whole topic, earliest to the end offsets at the start (`trigger(availableNow=True)`), into
    Parquet files under `folder/out`; the rows are counted from what was written. Offset ranges are split
    over every core (`minPartitions`), so one Kafka partition does not leave Spark a single task."""
    from pyspark.sql import functions as F

    source = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", "true")
        # a Kafka partition is one task unless split: every core reads, as a Spark user would have it
        .option("minPartitions", str(spark.sparkContext.defaultParallelism))
        .load()
    )
    rows = source.select(F.from_json(F.col("value").cast("string"), SCHEMA).alias("row")).select("row.*")
    started = time.monotonic()
    query = (
        rows.writeStream.format("parquet")
        .option("path", str(folder / "out"))
        .option("checkpointLocation", str(folder / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    seconds = time.monotonic() - started
    if query.exception() is not None:
        raise RuntimeError(f"the Spark peer failed: {query.exception()}")
    return PeerRun(ds.dataset(folder / "out", format="parquet").count_rows(), seconds)
