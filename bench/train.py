"""Spark fit time per model as the row count doubles, reading Parquet and CSV batch files.

Data: a numpy random walk written by the real batch store into a temporary folder (one batch per
size and format), so the benchmark depends on nothing else. Per size and format it reads the batch
once (repartitioned, cached, counted: that is the read time), then fits each model's pipeline with
the spec's default hyperparameters on the first 80% by time, as training does (no MLflow logging:
that cost does not grow with rows). A fit reads the cache, not the files, so by default the models
are fitted once per size (on the Parquet cache); --fit-each-format fits on the CSV cache too.
Prints a table and the growth ratio per doubling.

With --master spark://... the same rows are timed on that cluster and then on local[*] in the same
run (one SparkSession after the other), and a last table gives both times and their ratio.

    .venv/bin/python bench/train.py            # 0.5M, 1M, 2.33M rows, Parquet and CSV
    .venv/bin/python bench/train.py --quick    # 100k and 200k rows, Parquet and CSV
    .venv/bin/python bench/train.py --quick --formats parquet --master spark://127.0.0.1:7077
    .venv/bin/python bench/train.py --formats parquet --hdfs hdfs://127.0.0.1:9820/bench   # local vs HDFS
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.dataset import sha256_of  # noqa: E402
from core.storage import open_storage  # noqa: E402
from pipeline.store import BatchStore  # noqa: E402
from training import data  # noqa: E402
from training.specs import SPECS, build_pipeline, resolve_params  # noqa: E402
from training.train import prepare  # noqa: E402


def minutes(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = 1325412060.0 + 60.0 * np.arange(rows)
    close = 5000.0 + np.cumsum(rng.normal(0, 2.0, rows))
    open_ = np.concatenate([[5000.0], close[:-1]])
    high = np.maximum(open_, close) + rng.exponential(1.0, rows)
    low = np.minimum(open_, close) - rng.exponential(1.0, rows)
    volume = rng.exponential(5.0, rows)
    return pa.table(
        {"Timestamp": ts, "Open": open_, "High": high, "Low": low, "Close": close, "Volume": volume}
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100k and 200k rows only (about a minute)")
    parser.add_argument("--rows", type=int, nargs="*", help="row counts to time (overrides the defaults)")
    parser.add_argument("--formats", nargs="*", default=["parquet", "csv"], choices=["parquet", "csv"])
    parser.add_argument("--models", nargs="*", default=list(SPECS), choices=list(SPECS))
    parser.add_argument(
        "--master",
        default="local[*]",
        help="Spark master (default local[*]); a spark:// master is compared with local[*] in the same run",
    )
    parser.add_argument(
        "--executor-memory", default="1g", help="executor heap on a cluster (must fit a worker; default 1g)"
    )
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the cached input")
    parser.add_argument(
        "--fit-each-format", action="store_true", help="also fit on the CSV-read cache (same work again)"
    )
    parser.add_argument("--num-trees", type=int, default=None, help="forest size (default: the spec's)")
    parser.add_argument("--max-depth", type=int, default=None, help="tree depth (default: the spec's)")
    parser.add_argument(
        "--hdfs",
        help="hdfs://host:port/path: each size's Parquet batch also written, verified, read, fitted there",
    )
    args = parser.parse_args()
    sizes = args.rows or ([100_000, 200_000] if args.quick else [500_000, 1_000_000, 2_330_000])
    overrides = {"num_trees": args.num_trees, "max_depth": args.max_depth}

    masters = [args.master] + ([] if args.master.startswith("local") else ["local[*]"])
    root = Path(tempfile.mkdtemp(prefix="btcflow-bench-train-"))
    by_master: dict[str, list[dict]] = {}
    try:
        full = minutes(max(sizes))
        for master in masters:
            print(f"master {master}", flush=True)
            by_master[master] = _run(master, args, sizes, overrides, full, root / str(len(by_master)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for master, table_rows in by_master.items():
        print(f"\nmaster {master}")
        print(_table(table_rows, args.models))
    if len(masters) == 2:
        print()
        print(_comparison(by_master[masters[0]], by_master[masters[1]], masters, args.models))


def _run(master: str, args, sizes: list[int], overrides: dict, full: pa.Table, root: Path) -> list[dict]:
    """Every size and format on one master: a session of its own, stopped at the end."""
    spark = data.spark_session(master, "6g", args.partitions, executor_memory=args.executor_memory)
    table_rows: list[dict] = []
    try:
        _warm_up(spark, root, full, args.models, overrides)
        for rows in sizes:
            cached = {}
            for fmt in args.formats:
                directory = root / f"{fmt}-{rows}"
                started = time.monotonic()
                BatchStore(directory, fmt).write_batch(full.slice(0, rows), {0: (0, rows - 1)})
                write_s = time.monotonic() - started
                started = time.monotonic()
                base = data.read_batches(spark, directory, data.read_manifest(directory))
                base = base.repartition(args.partitions).cache()
                assert base.count() == rows
                cached[fmt] = base
                row = {"format": fmt, "rows": rows, "write_s": write_s, "read_s": time.monotonic() - started}
                # Once cached, a fit never touches the files again: fit on the first format's cache only
                # unless asked, and spend the time on bigger sizes instead.
                if fmt == args.formats[0] or args.fit_each_format:
                    for name in args.models:
                        row[name] = _fit(SPECS[name], base, overrides)
                table_rows.append(row)
                print(_line(row, args.models), flush=True)
            if args.hdfs:
                table_rows.append(_on_hdfs(spark, args, rows, full, root, overrides, table_rows))
            for base in cached.values():
                base.unpersist()
    finally:
        spark.stop()
    return table_rows


def _on_hdfs(spark, args, rows: int, full: pa.Table, root: Path, overrides: dict, done: list[dict]) -> dict:
    """The same Parquet batch committed to HDFS, verified by HDFS's own checksum (the time beside the
    local sha256 of the same bytes), read and fitted as on the local disk; the ratio local / HDFS."""
    storage = open_storage(f"{args.hdfs}/{rows}-{uuid.uuid4().hex[:6]}")
    started = time.monotonic()
    BatchStore(storage).write_batch(full.slice(0, rows), {0: (0, rows - 1)})
    write_s = time.monotonic() - started
    batches = data.read_manifest(storage)
    started = time.monotonic()
    data.verify_batches(storage, batches, spark)
    crc_s = time.monotonic() - started
    local_file = root / f"parquet-{rows}" / batches[0].file
    started = time.monotonic()
    sha256_of(local_file)
    sha_s = time.monotonic() - started
    started = time.monotonic()
    base = data.read_batches(spark, storage, batches).repartition(args.partitions).cache()
    assert base.count() == rows
    row = {"format": "parquet@hdfs", "rows": rows, "write_s": write_s, "read_s": time.monotonic() - started}
    for name in args.models:
        row[name] = _fit(SPECS[name], base, overrides)
    base.unpersist()
    local = next(r for r in done if r["rows"] == rows and r["format"] == "parquet")
    total = sum(row[k] for k in ("read_s", *args.models))
    ratio = sum(local[k] for k in ("read_s", *args.models)) / total
    print(_line(row, args.models), flush=True)
    print(
        f"    hdfs: file checksum {crc_s * 1000:.0f} ms (local sha256 of the bytes {sha_s * 1000:.0f} ms); "
        f"read + fit local / hdfs = {ratio:.2f}x (goal 0.8)",
        flush=True,
    )
    return row


def _comparison(first: list[dict], second: list[dict], masters: list[str], models: list[str]) -> str:
    """Read and fit seconds on both masters, and first / second (above 1: the first is slower)."""
    lines = [
        f"| format | rows | step | {masters[0]} s | {masters[1]} s | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for a, b in zip(first, second, strict=True):
        for step in ["read_s", *models]:
            if step in a and step in b:
                name = "read+cache" if step == "read_s" else f"{step} fit"
                ratio = a[step] / b[step] if b[step] else float("nan")
                times = f"{a[step]:.1f} | {b[step]:.1f}"
                lines.append(f"| {a['format']} | {a['rows']:,} | {name} | {times} | x{ratio:.2f} |")
    return "\n".join(lines)


def _fit(spec, base, overrides: dict) -> float:
    """Seconds to fit the spec's pipeline on the first 80% by time, as training does."""
    df = prepare(spec, base)
    df = df if df is base else df.cache()
    cutoff = data.time_cutoff(df, 0.2)
    started = time.monotonic()
    build_pipeline(spec, resolve_params(spec, overrides)).fit(df.where(df.Timestamp < cutoff))
    seconds = time.monotonic() - started
    if df is not base:
        df.unpersist()
    return seconds


def _warm_up(spark, root: Path, full: pa.Table, models: list[str], overrides: dict) -> None:
    """One untimed fit per model on 20k rows: the JVM's JIT and Spark's class loading cost ~20 s once."""
    directory = root / "warm-up"
    BatchStore(directory, "parquet").write_batch(full.slice(0, 20_000), {0: (0, 19_999)})
    base = data.read_batches(spark, directory, data.read_manifest(directory)).cache()
    for name in models:
        build_pipeline(SPECS[name], resolve_params(SPECS[name], overrides)).fit(prepare(SPECS[name], base))
    base.unpersist()


def _line(row: dict, models: list[str]) -> str:
    fits = " ".join(f"{m}={row[m]:.1f}s" for m in models if m in row)
    read = f"write {row['write_s']:.1f}s read+cache {row['read_s']:.1f}s"
    return f"{row['format']:7} {row['rows']:>9,} rows: {read} {fits}"


def _table(rows: list[dict], models: list[str]) -> str:
    fit_heads = " | ".join(f"{m} fit s" for m in models)
    head = f"| format | rows | read+cache s | {fit_heads} | growth vs previous size |"
    lines = [head, "|" + "---|" * (4 + len(models))]
    last: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (r["format"] != "parquet", r["rows"])):
        growth = ""
        previous = last.get(row["format"])
        if previous:
            factor = row["rows"] / previous["rows"]
            ratios = [f"read x{row['read_s'] / previous['read_s']:.2f}"]
            ratios += [f"{m} x{row[m] / previous[m]:.2f}" for m in models if m in row and m in previous]
            growth = f"rows x{factor:.2f}: {', '.join(ratios)}"
        fits = " | ".join(f"{row[m]:.1f}" if m in row else "(same cache)" for m in models)
        lines.append(f"| {row['format']} | {row['rows']:,} | {row['read_s']:.1f} | {fits} | {growth} |")
        last[row["format"]] = row
    return "\n".join(lines)


if __name__ == "__main__":
    main()
