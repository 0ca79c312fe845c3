"""`btcflow train --watch`: a new model version as each batch closes, optionally promoted by the gate.

Progress lives in the registry, not in this process: each version is tagged with the last batch it
saw, so a restarted watcher trains only what is missing. The loop is bounded (`max_batches`,
`idle_timeout`) and stops between steps on SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core.signals import stop_on_signals
from training import data
from training.data import Batch, Scheme
from training.gate import promote_best
from training.registry import Promotion, versions
from training.settings import TrainingSettings
from training.specs import ModelSpec, get_spec
from training.tracking import connect
from training.train import TrainResult, train_selection

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("training")


def trained_upto(spec: ModelSpec, scheme: Scheme) -> int:
    """The last batch a registered version of this model saw under this scheme (0: none)."""
    from mlflow import MlflowClient

    done = [
        int(v.tags.get("btcflow.last_batch", 0))
        for v in versions(MlflowClient(), spec)
        if v.tags.get("btcflow.scheme") == scheme
    ]
    return max(done, default=0)


def _stopping(signum: int) -> None:
    log.warning("signal %s: stopping after the current step", signum)


def _selection(manifest: list[Batch], batch: Batch, scheme: Scheme) -> list[Batch]:
    return [b for b in manifest if b.batch <= batch.batch] if scheme == "cumulative" else [batch]


def _enough_rows(specs: list[ModelSpec], chosen: list[Batch], scheme: Scheme) -> list[ModelSpec]:
    """The specs `chosen` holds enough rows for, saying why for the others. Unlike `btcflow train`, an
    unattended loop must not die on a short batch (an idle consumer's tail): segment mode skips it for
    that model (it never grows), cumulative mode waits for the next batch to grow the prefix."""
    ready = []
    for spec in specs:
        short = data.short_of_rows(spec, chosen)
        if short is None:
            ready.append(spec)
        else:
            log.warning("%s: %s", short, "skipped" if scheme == "segment" else "waiting for the next batch")
    return ready


def watch(
    settings: TrainingSettings,
    models: list[str],
    scheme: Scheme = "cumulative",
    promote: bool = False,
    max_batches: int | None = None,
    idle_timeout: float | None = None,
    poll: float = 2.0,
    overrides: dict[str, Any] | None = None,
    spark: SparkSession | None = None,
    report: Callable[[TrainResult | Promotion], None] | None = None,
    require_baseline: bool = True,
    progress: bool = False,
) -> list[TrainResult]:
    """Train (and optionally promote) as batches close; returns the versions trained.

    Ends after `max_batches` new batches, after `idle_timeout` seconds without one, or on a signal.
    In cumulative mode a backlog is caught up with one version on the newest prefix (it covers the
    others); segment mode trains every batch on its own. Promotion goes through the --best gate, which
    by default (`require_baseline`) also refuses a version that does not beat the naive baseline: an
    unattended loop must not put a model worse than doing nothing in front of users. `progress`: a live
    line per fit on stderr.
    """
    specs = [get_spec(m) for m in models]
    connect(settings)
    done = {spec.name: trained_upto(spec, scheme) for spec in specs}
    storage = settings.batch_storage()
    if not data.read_manifest(storage, required=False):  # said once: a wrong location would wait forever
        log.warning("no batch in %s yet: waiting for `btcflow consume`", storage.uri)
    with stop_on_signals(on_signal=_stopping) as stop:
        results: list[TrainResult] = []
        seen, looked, last_progress = 0, 0, time.monotonic()
        while not stop.is_set():
            manifest = data.read_manifest(storage, required=False)
            pending = [b for b in manifest if b.batch > max(min(done.values()), looked)]
            if pending:
                targets = [pending[-1]] if scheme == "cumulative" else pending[:1]
                for batch in targets:
                    chosen = _selection(manifest, batch, scheme)
                    todo = [s for s in specs if done[s.name] < batch.batch]
                    ready = _enough_rows(todo, chosen, scheme)
                    looked = batch.batch
                    seen += len(pending) if scheme == "cumulative" else 1
                    if scheme == "segment":  # skipped ones for good: a restart says so again
                        done.update({s.name: batch.batch for s in todo if s not in ready})
                    if not ready:
                        continue
                    data.verify_batches(storage, chosen)  # exit 2: never train on unvouched bytes
                    spark = spark or data.session(settings)
                    trained = train_selection(spark, settings, ready, chosen, scheme, overrides, progress)
                    for result in trained:
                        results.append(result)
                        if report:
                            report(result)
                    for spec in ready:
                        done[spec.name] = batch.batch
                        if promote:
                            promotion = promote_best(
                                settings, spec.name, spark, require_baseline=require_baseline
                            )
                            if report:
                                report(promotion)
                last_progress = time.monotonic()
                if max_batches is not None and seen >= max_batches:
                    break
                continue
            if idle_timeout is not None and time.monotonic() - last_progress >= idle_timeout:
                log.info("no new batch for %.0fs: stopping", idle_timeout)
                break
            time.sleep(poll)
    return results
