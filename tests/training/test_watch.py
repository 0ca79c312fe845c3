"""`train --watch`: versions follow batches as they close, promotion follows, restarts resume."""

from __future__ import annotations

import signal
import time

import pytest
from mlflow import MlflowClient

from tests.training.conftest import minute_table, write_batches
from training.registry import Promotion
from training.settings import TrainingSettings
from training.watch import watch


def test_watch_trains_each_new_batch_and_promotes(spark, store_settings: TrainingSettings) -> None:
    table = minute_table(3000, drift=0.05, walk=0.02)
    store = write_batches(store_settings.batch_dir, table.slice(0, 2000), [1000, 1000])
    events: list[object] = []

    def report(item: object) -> None:
        events.append(item)
        if len(events) == 1:  # a batch closes while the watcher is busy with the first version
            store.write_batch(table.slice(2000, 1000), {0: (2000, 2999)})

    results = watch(
        store_settings,
        ["close"],
        "cumulative",
        promote=True,
        max_batches=3,
        idle_timeout=60,
        poll=0.2,
        spark=spark,
        report=report,
    )
    # the backlog (1, 2) is caught up with one version on both; batch 3 gets the next
    assert [(r.version, r.batches) for r in results] == [("1", [1, 2]), ("2", [1, 2, 3])]
    promotions = [e for e in events if isinstance(e, Promotion)]
    assert len(promotions) == 2 and promotions[0].promoted
    client = MlflowClient()
    alias = str(client.get_model_version_by_alias("btc-close", "production").version)
    staged = [
        str(v.version)
        for v in client.search_model_versions("name='btc-close'")
        if v.current_stage == "Production"
    ]
    assert staged == [alias]

    # a restarted watcher finds nothing new in the registry's tags and ends on its idle timeout
    assert watch(store_settings, ["close"], "cumulative", idle_timeout=0.5, poll=0.1, spark=spark) == []


def test_watch_gives_the_signal_handlers_back(store_settings: TrainingSettings) -> None:
    """Ctrl-C stops the watch between steps while it runs, and is the caller's again afterwards."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    seen: dict[int, object] = {}
    pause = time.sleep

    def sleep(seconds: float) -> None:  # runs inside the loop: the watch's handlers are installed
        seen.update({sig: signal.getsignal(sig) for sig in before})
        pause(seconds)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("training.watch.time.sleep", sleep)
        assert watch(store_settings, ["close"], idle_timeout=0.2, poll=0.05) == []  # no manifest yet
    assert seen and all(seen[sig] is not before[sig] for sig in before)
    assert {sig: signal.getsignal(sig) for sig in before} == before
