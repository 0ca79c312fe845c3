"""Live metrics in MLflow: one monitoring run per model version, next to the training runs, throttled.

Each version scored gets a run named `monitor-<registered name>-v<version>` in the `btcflow` experiment,
tagged `btcflow.monitor=true` with the model, the version and its training run; the version gets the tag
`btcflow.monitor_run_id` back. (MLflow 3's own link, a logged model as a run's input, needs a LoggedModel;
the Spark flavour's versions here have none, their `model_id` is empty.) A restarted monitor finds and
continues the same run, so its charts go on where they stopped. Metrics are `live_<W>m/<metric>` (the UI
groups them by window), with the newest scored minute (int(Timestamp // 60)) as step, logged with one
`log_batch` per version at most every `interval_s` and once more at stop. A store that does not answer
costs a warning, never the loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from monitoring.scoring import Member

log = logging.getLogger("monitoring")

Figures = Mapping[int, Mapping[str, float]]  # window minutes -> live metrics


def metric_key(window: int, key: str) -> str:
    return f"live_{window}m/{key}"


class MonitorRuns:
    """The monitoring runs of the versions scored, and when they were last written."""

    def __init__(
        self,
        client: Any,
        experiment_id: str,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.interval_s = interval_s
        self.clock = clock
        self.run_ids: dict[tuple[str, str], str] = {}
        self._logged: dict[tuple[str, str], int] = {}  # the step last logged per version
        self._last = -float("inf")
        self._failing = False

    def due(self) -> bool:
        return self.clock() - self._last >= self.interval_s

    def open(self, members: list[Member]) -> None:
        """Find or create the runs of versions new to the lineup now, rather than at their first log:
        a few registry and tracking calls each, better spent before the stream than in the middle of it."""
        self._guarded(lambda: [self._run(member) for member in members])

    def log(self, members: list[Member], figures: Mapping[tuple[str, str], Figures], steps: dict) -> None:
        """Log each member's figures at its newest minute, if that minute moved since its last log."""
        self._last = self.clock()
        now_ms = int(time.time() * 1000)

        def write() -> None:
            from mlflow.entities import Metric

            for member in members:
                key = (member.spec.registered_name, member.version)
                step = steps.get(key)
                if step is None or key not in figures or self._logged.get(key) == step:
                    continue
                metrics = [
                    Metric(metric_key(window, name), float(value), now_ms, step)
                    for window, values in figures[key].items()
                    for name, value in values.items()
                ]
                self.client.log_batch(self._run(member), metrics=metrics)
                self._logged[key] = step

        self._guarded(write)

    def _guarded(self, call: Callable[[], object]) -> None:
        """`call()`; a store that fails is said once (and its recovery once), and the loop goes on."""
        try:
            call()
        except Exception as exc:  # the store went away: keep scoring, try again at the next log
            if not self._failing:
                log.warning("live metrics not logged to MLflow (will retry): %s", exc)
            self._failing = True
            return
        if self._failing:
            log.warning("MLflow answers again: live metrics logged")
        self._failing = False

    def finish(self, key: tuple[str, str]) -> None:
        """The version is no longer scored (or the monitor stops): its run is FINISHED until next time."""
        run_id = self.run_ids.pop(key, None)
        if run_id is not None:
            try:
                self.client.set_terminated(run_id, "FINISHED")
            except Exception as exc:
                log.warning("monitoring run %s not marked finished: %s", run_id, exc)

    def close(self) -> None:
        for key in list(self.run_ids):
            self.finish(key)

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
        else:
            tags = {
                "btcflow.monitor": "true",
                "btcflow.model": member.kind,
                "btcflow.registered_model": name,
                "btcflow.model_version": version,
                "btcflow.model_run_id": member.run_id,
                "mlflow.note.content": f"Live metrics of {name} v{version} on the stream, scored by "
                "`btcflow monitor` once each minute's truth arrived; step = minute (Timestamp // 60).",
            }
            run = self.client.create_run(self.experiment_id, run_name=f"monitor-{name}-v{version}", tags=tags)
            run_id = run.info.run_id
            self.client.set_model_version_tag(name, version, "btcflow.monitor_run_id", run_id)
        self.run_ids[key] = run_id
        return run_id
