"""Commit-cost benchmark: what one batch commit costs when the dataset holds 10 batches and when it holds
1,000, on the local disk and on HDFS (a 1-DataNode HDFS started here in a temporary folder, unless
--hdfs names one or --no-hdfs skips it).

Each batch is tiny (10 rows), so the figures are the protocol's own cost: the claim (read where the
dataset stands, create the commit record), the publish (rename the staged file) and the rewrite of the
manifest view. It prints the median of each at batches 1-10 and 991-1000 and their ratio (goal: the
claim and publish flat, about 1.0x).
    .venv/bin/python bench/commit.py [--batches 1000] [--hdfs hdfs://127.0.0.1:9820/bench | --no-hdfs]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pyarrow as pa
from local_hdfs import temporary_hdfs  # bench/local_hdfs.py

from core.storage import HdfsStorage, LocalStorage, Storage
from pipeline.store import COLUMNS, BatchStore


def rows(first: int, n: int) -> pa.Table:
    ts = 1325412060.0 + 60.0 * np.arange(first, first + n)
    return pa.table({name: ts if name == "Timestamp" else np.full(n, 1.5) for name in COLUMNS})


class TimedStore(BatchStore):
    """The real store, with the time of each commit's steps kept."""

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)
        self.steps: list[dict[str, float]] = []

    def _claim(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - timing wrapper
        started = time.perf_counter()
        record = super()._claim(*args, **kwargs)
        self.steps.append({"claim": time.perf_counter() - started})
        return record

    def _publish(self, record):  # noqa: ANN001, ANN202
        started = time.perf_counter()
        super()._publish(record)
        if self.steps and "publish" not in self.steps[-1] and "claim" in self.steps[-1]:
            self.steps[-1]["publish"] = time.perf_counter() - started

    def _refresh_view(self) -> None:
        started = time.perf_counter()
        super()._refresh_view()
        self.steps[-1]["view"] = time.perf_counter() - started


def measure(storage: Storage, batches: int) -> dict[str, tuple[float, float]]:
    store = TimedStore(storage)
    for k in range(batches):
        store.write_batch(rows(10 * k, 10), {0: (10 * k, 10 * k + 9)})
    first, last = store.steps[:10], store.steps[-10:]
    return {
        step: (statistics.median(s[step] for s in first), statistics.median(s[step] for s in last))
        for step in ("claim", "publish", "view")
    }


def report(name: str, figures: dict[str, tuple[float, float]], batches: int) -> None:
    for step, (early, late) in figures.items():
        print(
            f"{name:6} {step:8} at 1-10: {early * 1000:7.2f} ms   at {batches - 9}-{batches}: "
            f"{late * 1000:7.2f} ms   ratio {late / early:5.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=1000, help="batches to commit in each store")
    parser.add_argument("--hdfs", help="an hdfs://host:port/path to use instead of starting one")
    parser.add_argument("--no-hdfs", action="store_true", help="the local disk only")
    args = parser.parse_args()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="btcflow-commit-")))
        report("local", measure(LocalStorage(tmp / "batch"), args.batches), args.batches)
        if args.no_hdfs:
            return
        uri = args.hdfs
        if uri is None:
            cluster = temporary_hdfs(tmp)
            stack.callback(cluster.stop)
            uri = f"{cluster.start(datanodes=1)}/bench"
        report("hdfs", measure(HdfsStorage(f"{uri}/{uuid.uuid4().hex}"), args.batches), args.batches)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
