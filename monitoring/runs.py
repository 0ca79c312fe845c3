"""Live metrics in MLflow: one monitoring run per model version, beside the training runs, a point a minute.

Each version scored gets a run named `monitor-<registered name>-v<version>` in the `btcflow` experiment,
tagged `btcflow.monitor=true` with the model, the version and its training run; the version gets the tag
`btcflow.monitor_run_id` back. (MLflow 3's own link, a logged model as a run's input, needs a LoggedModel;
the Spark flavour's versions here have none, their `model_id` is empty.) A restarted monitor finds and
continues the same run, so its charts go on where they stopped.

Metrics are `live_<W>m/<metric>` (the UI groups them by window). Every scored minute is one point: step =
the minute's index, int(Timestamp // 60), and timestamp = the minute's own time in ms, so the UI's step and
time axes are event time and a replay charts like a live feed. Points wait in memory and go out at most
every `interval_s` (and once more at stop), in `log_batch` calls of at most 1,000 metrics (MLflow's
limit), written by a thread of their own: a slow store never holds up polling, commits or a stop. A
replay faster than `points_per_s` minutes a second per version is thinned evenly to that many points a
second (the newest minute always kept): at the default 60 a 2,000-minute replay in 5 s still charts
300 points, and the store is not asked for 100,000 rows a second. A store that does not answer costs a
warning and the points of that call, never the loop.

Every run the monitor opens ends: FINISHED when the version leaves the lineup or the monitor stops at
one of its bounds, KILLED on SIGINT/SIGTERM, FAILED when it stops on an error; the tag
`btcflow.monitor_end` says why (it is cleared when a restarted monitor continues the run).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from monitoring.scoring import Member
from monitoring.windows import Points

log = logging.getLogger("monitoring")

BATCH = 1000  # metrics per log_batch call: MLflow's limit
POINTS_PER_S = 60.0  # most points a second per version sent (a faster replay is thinned evenly)
END_TAG = "btcflow.monitor_end"
Key = tuple[str, str]  # (registered name, version)


def metric_key(window: int, key: str) -> str:
    return f"live_{window}m/{key}"


def thin(points: list[Points], budget: int) -> tuple[np.ndarray, dict[int, dict[str, np.ndarray]]]:
    """The points' minutes and figures joined, then at most `budget` of them, evenly spread, the newest
    kept (a live feed's one minute per log is never thinned)."""
    minute = np.concatenate([p.minute for p in points])
    figures = {
        w: {k: np.concatenate([p.figures[w][k] for p in points]) for k in points[0].figures[w]}
        for w in points[0].figures
    }
    if len(minute) > budget:
        keep = np.unique(np.linspace(len(minute) - 1, 0, max(budget, 1)).round().astype(np.int64))
        minute = minute[keep]
        figures = {w: {k: v[keep] for k, v in f.items()} for w, f in figures.items()}
    return minute, figures


def to_metrics(minute: np.ndarray, figures: dict[int, dict[str, np.ndarray]]) -> list[Any]:
    """MLflow metrics, one per minute and figure: step the minute, timestamp the minute's time in ms."""
    from mlflow.entities import Metric

    steps = minute.tolist()
    out: list[Any] = []
    for window, values in figures.items():
        for name, series in values.items():
            key = metric_key(window, name)
            out.extend(
                Metric(key, float(v), step * 60_000, step)
                for step, v in zip(steps, series.tolist(), strict=True)
                if math.isfinite(v)
            )
    return out


class MonitorRuns:
    """The monitoring runs of the versions scored, their points not sent yet, and the thread that sends."""

    def __init__(
        self,
        client: Any,
        experiment_id: str,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        points_per_s: float = POINTS_PER_S,
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.interval_s = interval_s
        self.clock = clock
        self.points_per_s = points_per_s
        self.run_ids: dict[Key, str] = {}
        self.pending: dict[Key, list[Points]] = {}
        self.dropped = 0  # points thinned away (a replay faster than points_per_s)
        self._last = clock()
        self._failing = False
        self._queue: queue.Queue[tuple[str, list[Any]] | None] = queue.Queue()
        self._writer: threading.Thread | None = None

    def due(self) -> bool:
        return self.clock() - self._last >= self.interval_s

    def open(self, members: list[Member]) -> None:
        """Find or create the runs of versions new to the lineup now, rather than at their first log:
        a few registry and tracking calls each, better spent before the stream than in the middle of it."""
        self._guarded(lambda: [self._run(member) for member in members])

    def take(self, key: Key, points: list[Points]) -> None:
        """Per-minute figures of one version (RollingLog.drain), kept until the next log."""
        if points:
            self.pending.setdefault(key, []).extend(points)

    def log(self, members: list[Member]) -> None:
        """Hand every member's pending points to the writer: one point a minute, thinned to the budget of
        the time since the last log. Skipped while the writer is still busy (the points wait, and the
        next budget covers the longer time)."""
        now = self.clock()
        if self._queue.unfinished_tasks:
            return
        budget = math.ceil(self.points_per_s * max(self.interval_s, now - self._last))
        self._last = now
        for member in members:
            key = (member.spec.registered_name, member.version)
            points = self.pending.get(key)
            if not points:
                continue
            run_id = self._guarded(partial(self._run, member))
            if run_id is None:
                continue  # the store is down: the points wait for the next log
            del self.pending[key]
            minute, figures = thin(points, budget)
            self.dropped += sum(len(p.minute) for p in points) - len(minute)
            metrics = to_metrics(minute, figures)
            for start in range(0, len(metrics), BATCH):
                self._send(run_id, metrics[start : start + BATCH])

    def _send(self, run_id: str, metrics: list[Any]) -> None:
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write, args=(self._queue,), name="monitor-mlflow", daemon=True
            )
            self._writer.start()
        self._queue.put((run_id, metrics))

    def _write(self, items: queue.Queue[tuple[str, list[Any]] | None]) -> None:
        while (item := items.get()) is not None:
            run_id, metrics = item
            try:
                self._guarded(partial(self.client.log_batch, run_id, metrics=metrics))
            finally:
                items.task_done()
        items.task_done()

    def flush(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the writer to send what it was handed; whether it did."""
        if self._writer is None:
            return True
        self._queue.put(None)
        self._writer.join(timeout_s)
        sent = not self._writer.is_alive()
        self._writer = None
        if not sent:
            log.warning(
                "live metrics still being sent to MLflow after %.0f s: the rest is dropped", timeout_s
            )
            self._queue = queue.Queue()  # the old thread keeps its own queue and ends at its sentinel
        return sent

    def _guarded(self, call: Callable[[], Any]) -> Any:
        """`call()`; a store that fails is said once (and its recovery once), and the loop goes on."""
        try:
            result = call()
        except Exception as exc:  # the store went away: keep scoring, try again at the next log
            if not self._failing:
                log.warning("live metrics not logged to MLflow (will retry): %s", exc)
            self._failing = True
            return None
        if self._failing:
            log.warning("MLflow answers again: live metrics logged")
        self._failing = False
        return result

    def finish(self, key: Key, status: str = "FINISHED", reason: str = "left the lineup") -> None:
        """The version is no longer scored (or the monitor stops): its run ends, with why."""
        self.pending.pop(key, None)
        run_id = self.run_ids.pop(key, None)
        if run_id is not None:
            try:
                self.client.set_tag(run_id, END_TAG, reason[:5000])
                self.client.set_terminated(run_id, status)
            except Exception as exc:
                log.warning("monitoring run %s not marked %s: %s", run_id, status.lower(), exc)

    def close(self, status: str = "FINISHED", reason: str = "stopped", timeout_s: float = 2.0) -> None:
        """Send what is pending (waiting at most `timeout_s`), then end every run."""
        self.flush(timeout_s)
        for key in list(self.run_ids):
            self.finish(key, status, reason)

    def _run(self, member: Member) -> str:
        key = (member.spec.registered_name, member.version)
        if key in self.run_ids:
            return self.run_ids[key]
        name, version = key
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`btcflow.monitor` = 'true' and tags.`btcflow.registered_model` = '{name}' "
            f"and tags.`btcflow.model_version` = '{version}'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            if END_TAG in found[0].data.tags:
                self.client.delete_tag(run_id, END_TAG)
        else:
            tags = {
                "btcflow.monitor": "true",
                "btcflow.model": member.kind,
                "btcflow.registered_model": name,
                "btcflow.model_version": version,
                "btcflow.model_run_id": member.run_id,
                "mlflow.note.content": f"Live metrics of {name} v{version} on the stream, scored by "
                "`btcflow monitor` once each minute's truth arrived; one point per minute: step = "
                "Timestamp // 60, timestamp = the minute's time.",
            }
            run = self.client.create_run(self.experiment_id, run_name=f"monitor-{name}-v{version}", tags=tags)
            run_id = run.info.run_id
            self.client.set_model_version_tag(name, version, "btcflow.monitor_run_id", run_id)
        self.run_ids[key] = run_id
        return run_id
