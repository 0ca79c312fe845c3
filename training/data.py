"""What training reads: the manifest, the batch selection, and the batch files through Spark.

Training reads `manifest.json` through `core.dataset`, the format the consumer writes with (it never
imports `pipeline`): the manifest is the truth of which batches are closed, so a file it does not list
is never read, and a file it lists is read only once its bytes match the manifest's checksum
(`verify_batches`: the sha256 on the local disk, HDFS's own file CRC through Spark's Hadoop client).
Both checks (on HDFS, the file's presence), and whether the selection holds enough rows for each model,
run on the manifest alone, before Spark or the tracking store is touched.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from core import dataset, jvm
from core.dataset import COLUMNS, BatchEntry
from core.errors import BadInput, Unavailable
from core.storage import LocalStorage, Storage, as_storage
from services.spark.settings import make_event_dir
from training.specs import SPREADS, ModelSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from training.settings import TrainingSettings

log = logging.getLogger("training")
Scheme = Literal["segment", "cumulative"]
LABEL_HORIZON = 60.0  # seconds: the trend label is read off the next minute's Close
LOG4J = Path(__file__).with_name("log4j2.properties").resolve().as_uri()


Batch = BatchEntry  # one closed batch as the manifest records it


def read_manifest(where: Storage | Path, *, required: bool = True) -> list[Batch]:
    """The closed batches, in order. No manifest is bad input unless `required` is False (watching)."""
    storage = as_storage(where)
    try:
        entries = dataset.read_manifest(storage)
        exists = bool(entries) or storage.exists(dataset.MANIFEST)
    except dataset.ManifestError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise Unavailable(f"cannot read the dataset at {storage.uri}: {exc}") from None
    if not entries and required and not exists:
        location = storage.location(dataset.MANIFEST)
        raise BadInput(f"no manifest at {location}: run `btcflow consume` first (or set BTCFLOW_BATCH_URI)")
    return entries


def verify_batches(where: Storage | Path, batches: list[Batch], spark: SparkSession | None = None) -> None:
    """BadInput naming the first batch whose file is missing or not the bytes its manifest entry records.

    The check itself is core.dataset.verify (the format's owner, beside the writer's hash). On the local
    disk it hashes each file once per process, so calling this again before each read costs a stat per
    file. Elsewhere the store's own checksum answers, through Spark's Hadoop client: before Spark runs
    (spark None) only each file's presence is checked, and read_batches checks the rest.
    """
    storage = as_storage(where)
    local = isinstance(storage, LocalStorage)
    file_crc = None if local or spark is None else hadoop_file_crc(spark)
    for batch in batches:
        try:
            if local or spark is not None:
                dataset.verify(storage, batch, file_crc)
            elif not storage.exists(batch.file):
                location = storage.location(batch.file)
                raise dataset.BatchFileError(
                    f"batch {batch.batch} ({location}) is listed in its manifest but missing"
                )
        except dataset.BatchFileError as exc:
            raise BadInput(str(exc)) from None
        except OSError as exc:
            raise Unavailable(f"cannot read batch {batch.batch} at {storage.uri}: {exc}") from None


def hadoop_file_crc(spark: SparkSession) -> dataset.FileCrc:
    """A file's CRC32C as its store computes it, through the driver's Hadoop FileSystem: on HDFS the
    DataNodes combine the chunk checksums they keep beside each block (COMPOSITE_CRC mode makes the result
    the CRC32C of the whole file, whatever the block size), so no byte of the file crosses the network."""
    jvm: Any = spark._jvm  # noqa: SLF001 - py4j's gateway to the driver's JVM: Hadoop has no Python API
    conf = jvm.org.apache.hadoop.conf.Configuration(spark._jsc.hadoopConfiguration())  # noqa: SLF001
    conf.set("dfs.checksum.combine.mode", "COMPOSITE_CRC")

    def crc(location: str) -> str:
        path = jvm.org.apache.hadoop.fs.Path(location)
        # a new instance, not the cached one, which would keep the conf it was made with
        fs = jvm.org.apache.hadoop.fs.FileSystem.newInstance(path.toUri(), conf)
        try:
            checksum = fs.getFileChecksum(path)
        finally:
            fs.close()
        if checksum is None or checksum.getAlgorithmName() != "COMPOSITE-CRC32C":
            name = None if checksum is None else checksum.getAlgorithmName()
            raise dataset.BatchFileError(f"{location}: the store gave no CRC32C file checksum ({name})")
        return bytes(checksum.getBytes()).hex()

    return crc


def short_of_rows(spec: ModelSpec, batches: list[Batch]) -> str | None:
    """Why `batches` cannot train `spec` by the manifest's row counts, naming them; None when they can.

    The manifest's count is an upper bound (rows without a label or after a gap drop out later, and
    `time_cutoff` says so then), so this refuses only what could never train.
    """
    rows = sum(b.rows for b in batches)
    if rows >= spec.min_rows:
        return None
    if len(batches) == 1:
        what = f"batch {batches[0].batch} ({batches[0].file}) holds"
    else:
        what = f"batches {','.join(str(b.batch) for b in batches)} hold"
    return (
        f"{what} {rows:,} rows; {spec.name} needs at least {spec.min_rows:,} "
        "(a time split with rows to fit and rows to test)"
    )


def check_rows(specs: list[ModelSpec], batches: list[Batch]) -> None:
    """BadInput for an empty selection, or one with fewer rows than a model needs: before Spark starts."""
    if not batches:
        raise BadInput("no batch selected: nothing to train on")
    for spec in specs:
        if (short := short_of_rows(spec, batches)) is not None:
            raise BadInput(short)


def parse_spec(spec: str, available: list[int]) -> list[int]:
    """Batch numbers for SPEC `2`, `1-3`, `1,3`, `all` (or mixed `1-2,5`); every one must be closed."""
    text = spec.strip().lower()
    if text == "all":
        if not available:
            raise BadInput("the manifest lists no batch yet")
        return sorted(available)
    chosen: list[int] = []
    try:
        for part in text.split(","):
            first, sep, last = part.strip().partition("-")
            low, high = int(first), int(last) if sep else int(first)
            if low < 1 or high < low:
                raise ValueError
            chosen.extend(range(low, high + 1))
    except ValueError:
        raise BadInput(f"bad batch SPEC {spec!r}: use N, A-B, A,B or all (batches count from 1)") from None
    missing = sorted(set(chosen) - set(available))
    if missing:
        have = f"1-{max(available)}" if available else "none"
        raise BadInput(f"batch {missing[0]} is not in the manifest (closed batches: {have})")
    return sorted(set(chosen))


def selections(numbers: list[int], scheme: Scheme) -> list[list[int]]:
    """One selection per version to train: each batch alone (segment) or each prefix (cumulative)."""
    if scheme == "segment":
        return [[n] for n in numbers]
    if scheme == "cumulative":
        return [numbers[: i + 1] for i in range(len(numbers))]
    raise BadInput(f"unknown scheme {scheme!r}; choose segment or cumulative")


def spark_session(
    master: str,
    driver_memory: str = "4g",
    partitions: int = 4,
    *,
    event_dir: str | None = None,
    executor_memory: str = "1g",
    executor_cores: int | None = None,
    log_dir: Path | None = None,
    driver_host: str | None = None,
) -> SparkSession:
    """The process's one SparkSession, quiet (no UI, WARN logs), local mode or a standalone cluster.

    `event_dir` turns Spark's event log on (the history server replays it). On a cluster the executors
    run this very interpreter (same packages), and a driver talking to a master on 127.0.0.1 binds
    127.0.0.1 too; a remote master needs the driver on an address its executors reach, Spark's default.
    `driver_host` names the driver's own address when it is a host of its own. Hadoop's clients reach
    HDFS's DataNodes by the names they registered with, as core.storage's does.
    `log_dir` takes the JVM's own output off the terminal (core.logs.jvm_output) unless the level is
    debug.
    """
    from pyspark.sql import SparkSession

    from core import logs

    local = master.startswith("local")
    loopback = local or all(
        hostport.split(":")[0] in ("127.0.0.1", "localhost")
        for hostport in master.removeprefix("spark://").split(",")
    )
    if driver_host is None and loopback:
        driver_host = "127.0.0.1"
    if driver_host is not None:
        os.environ.setdefault("SPARK_LOCAL_IP", driver_host)  # no lookup of the host's address
    java_options = jvm.with_extra_options(f"-Dlog4j2.configurationFile={LOG4J}")
    # Spark's Python workers (local mode too) and a cluster's executors start PYSPARK_PYTHON, else
    # `python3` on PATH: another interpreter when this one is a venv's not on PATH (a second Python
    # version fails at once with PYTHON_VERSION_MISMATCH). PySpark sends the driver's to the executors.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    builder = (
        SparkSession.builder.master(master)
        .appName("btcflow-train")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.driver.memory", driver_memory)
        .config("spark.driver.extraJavaOptions", java_options)
        .config("spark.sql.shuffle.partitions", str(partitions))
        .config("spark.default.parallelism", str(partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.hadoop.dfs.client.use.datanode.hostname", "true")
    )
    dfs_tmp = urlsplit(os.environ.get("MLFLOW_DFS_TMP", ""))
    if dfs_tmp.scheme == "hdfs":  # mlflow.spark stages a model there through Hadoop's default file system
        builder = builder.config("spark.hadoop.fs.defaultFS", f"hdfs://{dfs_tmp.netloc}")
    if event_dir is not None:
        make_event_dir(event_dir)
        builder = builder.config("spark.eventLog.enabled", "true").config("spark.eventLog.dir", event_dir)
    if not local:
        builder = builder.config("spark.executor.memory", executor_memory).config(
            "spark.executor.extraJavaOptions", java_options
        )
        if executor_cores is not None:
            builder = builder.config("spark.executor.cores", str(executor_cores))
        if driver_host is not None:
            builder = builder.config("spark.driver.host", driver_host).config(
                "spark.driver.bindAddress", driver_host
            )
    with logs.jvm_output(log_dir):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def session(settings: TrainingSettings) -> SparkSession:
    """The SparkSession the settings describe, with the event log on and the JVM's output in
    <data_dir>/logs: what every training run uses."""
    from core import logs

    return spark_session(
        settings.spark_master,
        settings.spark_driver_memory,
        settings.spark_partitions,
        event_dir=settings.event_dir,
        executor_memory=settings.spark_executor_memory,
        executor_cores=settings.spark_executor_cores,
        log_dir=logs.jvm_log_dir(settings.data_dir),
        driver_host=settings.spark_driver_host,
    )


def spark_schema():  # noqa: ANN201 - pyspark type, imported lazily
    from pyspark.sql.types import DoubleType, StructField, StructType

    return StructType([StructField(name, DoubleType(), nullable=True) for name in COLUMNS])


def read_batches(spark: SparkSession, where: Storage | Path, batches: list[Batch]) -> DataFrame:
    """The selected batches as one DataFrame with the Kaggle columns as doubles (explicit schema)."""
    storage = as_storage(where)
    verify_batches(storage, batches, spark)  # locally done before Spark started: a stat per file now
    paths = [storage.url(b.file) for b in batches]
    parquet = [p for p in paths if p.endswith(".parquet")]
    csv = [p for p in paths if not p.endswith(".parquet")]
    frames = []
    if parquet:
        frames.append(spark.read.schema(spark_schema()).parquet(*parquet))
    if csv:
        frames.append(spark.read.schema(spark_schema()).option("header", "true").csv(csv))
    df = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
    return df.dropna(subset=list(COLUMNS))


def with_trend_label(df: DataFrame) -> DataFrame:
    """Add `label`: 1.0 when the NEXT minute's Close is above this minute's Close, else 0.0.

    The next minute is the row at Timestamp + 60; a row without one (a gap, the selection's end) has
    no honest label and is dropped. lead() over the time order finds the next row.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.orderBy("Timestamp")
    nxt = df.withColumn("_next_ts", F.lead("Timestamp").over(order)).withColumn(
        "_next_close", F.lead("Close").over(order)
    )
    return (
        nxt.where(F.col("_next_ts") == F.col("Timestamp") + LABEL_HORIZON)
        .withColumn("label", (F.col("_next_close") > F.col("Close")).cast("double"))
        .drop("_next_ts", "_next_close")
    )


def with_spreads(df: DataFrame) -> DataFrame:
    """Add high_low's labels: (High - Open) / Open and (Open - Low) / Open (training.specs.SPREADS).

    Clipped as the pipeline clips its predictions (the Low's to 1: a price is never below 0). A minute
    without a positive Open has no shape to learn and is left out.
    """
    from pyspark.sql import functions as F

    high, low = SPREADS
    return (
        df.where(F.col("Open") > 0)
        .withColumn(high, F.greatest((F.col("High") - F.col("Open")) / F.col("Open"), F.lit(0.0)))
        .withColumn(
            low, F.least(F.greatest((F.col("Open") - F.col("Low")) / F.col("Open"), F.lit(0.0)), F.lit(1.0))
        )
    )


SPREAD_QUANTILE = 0.999  # high_low's labels are capped at this quantile of the training rows' spreads


def winsorise_spreads(
    train: DataFrame, quantile: float = SPREAD_QUANTILE
) -> tuple[DataFrame, dict[str, float]]:
    """high_low's training labels capped at their `quantile` over these rows, and the caps.

    A print far off the market (a Low at cents in 2013) makes a spread of 0.99 where the market's is
    0.001: a forest's squared error follows such rows, and one leaf's mean moves a hundredfold. Capped
    labels keep every row (the Open and Volume still shape the splits) but not its outlier's weight.
    The test rows keep their true High and Low: the metrics judge real prices, bad prints included.
    """
    from pyspark.sql import functions as F

    caps = dict(zip(SPREADS, train.approxQuantile(list(SPREADS), [quantile], 1e-4), strict=True))
    capped = {name: float(values[0]) if values else 0.0 for name, values in caps.items()}
    for name, cap in capped.items():
        train = train.withColumn(name, F.least(F.col(name), F.lit(cap)))
    return train, capped


def time_cutoff(df: DataFrame, test_fraction: float) -> float:
    """The first Timestamp of the test set: the latest `test_fraction` of rows, no shuffling."""
    import numpy as np

    ts = np.sort(df.select("Timestamp").toPandas()["Timestamp"].to_numpy())  # type: ignore[index]
    if len(ts) < 10:
        raise BadInput(f"only {len(ts)} usable rows selected; a time split needs at least 10")
    return float(ts[min(len(ts) - 1, int(len(ts) * (1 - test_fraction)))])


def time_split(df: DataFrame, cutoff: float, horizon: float = 0.0) -> tuple[DataFrame, DataFrame]:
    """(train, test): test is every row from `cutoff` on; train every row whose label is known before it.

    `horizon` is how far ahead of its row a label looks (LABEL_HORIZON for trend, 0 when the label
    is in the row): the last minute before the cutoff is labelled from the first test minute's
    Close, so it would carry test data into training and is left out of both.
    """
    return df.where(df.Timestamp + horizon < cutoff), df.where(df.Timestamp >= cutoff)


def lineage(batches: list[Batch]) -> dict[str, str]:
    """Tags naming exactly which bytes and Kafka offsets a version was trained on."""
    return {
        "lineage.batch_files": ",".join(b.file for b in batches),
        "lineage.sha256": json.dumps({b.file: b.sha256 for b in batches}),
        "lineage.offsets": json.dumps({b.file: b.offsets for b in batches}),
        "lineage.rows": str(sum(b.rows for b in batches)),
        "lineage.ts_range": f"{batches[0].min_ts:.0f}-{batches[-1].max_ts:.0f}",
    }
