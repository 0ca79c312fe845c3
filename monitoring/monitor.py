"""`btcflow monitor`'s loop: read each poll, score it with every version in the lineup, judge, publish.

Bounded like every loop here: `max_minutes` rows scored, `idle_timeout_s` without a message, or the stop
flag (SIGINT/SIGTERM, core.signals). Once a second the live metrics go to /metrics, the verdicts are
judged (and a changed one said in one line), and the scored offsets are committed; every `log_interval_s`
they go to MLflow; every `refresh_s` the registry is asked again. A registry that stops answering keeps the
lineup as loaded (said once); one that does not answer at start is exit 3. With a `gate` (--promote), a
challenger that starts beating Production live is handed to it (once per challenger and Production
version: the gate starts Spark), and the registry is asked again at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka.errors import KafkaError

from core.errors import BadInput, RegistryUnavailable
from core.signals import stop_on_signals
from monitoring.exporter import Exporter
from monitoring.promotion import Gate
from monitoring.runs import MonitorRuns
from monitoring.scoring import Lineup
from monitoring.settings import MonitorSettings
from monitoring.stream import POLL_RECORDS, Stream
from monitoring.truth import Truth
from monitoring.verdicts import Judge
from monitoring.windows import RollingLog, live
from pipeline.broker import ensure_topic
from pipeline.settings import PipelineSettings
from services.kafka.admin import admin_client
from training.settings import TrainingSettings
from training.specs import SPECS

log = logging.getLogger("monitoring")

POLL_MS = 200  # longest wait inside one poll: how late a stop or an idle timeout is seen
PUBLISH_S = 1.0  # /metrics, verdicts and offset commits at most this often
PROBE_S = 30.0  # this long without a message: check the broker still answers (kafka-python retries)


@dataclass
class MonitorSummary:
    minutes: int
    rows_read: int
    bad: int
    seconds: float
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per version and window, for the table

    def line(self) -> str:
        rate = self.minutes / self.seconds if self.seconds > 0 else 0.0
        return (
            f"monitored {self.minutes:,} minutes ({self.rows_read:,} rows read, {self.bad} bad messages) "
            f"in {self.seconds:.1f} s ({rate:,.0f} rows/s)"
        )


class Monitor:
    """One monitoring session: the lineup, its rolling logs, and where the figures go."""

    def __init__(
        self,
        pipeline: PipelineSettings,
        training: TrainingSettings,
        settings: MonitorSettings,
        report: Callable[[str], None] = print,
        gate: Gate | None = None,
    ) -> None:
        self.pipeline, self.training, self.settings = pipeline, training, settings
        self.report, self.gate = report, gate
        self.exporter = Exporter()
        self.lineup = Lineup(training.tracking_uri, settings.challengers)
        self.judge = Judge(settings.windows[0], settings.min_minutes, settings.hold_minutes)
        self.truth = Truth()
        self.logs: dict[tuple[str, str], RollingLog] = {}
        self.runs: MonitorRuns | None = None
        self.scored = self.rows_read = self.bad = 0
        self._store_down = False
        self._failed: set[tuple[str, str]] = set()
        self._handed: set[tuple[str, str | None, str | None]] = set()

    # -- setting up -------------------------------------------------------------------------------
    def start(self) -> None:
        """Reach MLflow (exit 3 if not), load the lineup (exit 3 if the registry does not answer), serve."""
        from training.tracking import connect

        experiment_id = connect(self.training)
        changes = self.lineup.refresh()  # RegistryUnavailable (exit 3) if the registry does not answer
        self.runs = MonitorRuns(self.lineup.client(), experiment_id, self.settings.log_interval_s)
        self._lineup_changed(changes)
        if not self.lineup.all():
            self.report("no registered version can be scored yet: waiting for the registry")
        try:
            url = self.exporter.serve(self.settings.host, self.settings.port)
        except OSError as exc:
            raise BadInput(
                f"cannot serve /metrics on {self.settings.host}:{self.settings.port} ({exc.strerror}); "
                "--metrics-port 0 picks a free port"
            ) from None
        self.report(f"metrics at {url}")

    # -- the loop ------------------------------------------------------------------------------------
    def run(
        self,
        max_minutes: int | None = None,
        idle_timeout_s: float | None = None,
        from_beginning: bool = False,
        stop: threading.Event | None = None,
    ) -> MonitorSummary:
        stop = stop or threading.Event()
        ensure_topic(self.pipeline.bootstrap, self.pipeline.topic, self.pipeline.partitions)  # exit 3 fast
        started = time.monotonic()
        where = "its beginning" if from_beginning else "the group's offsets (a new group: the end)"
        self.report(f"reading {self.pipeline.topic} as group {self.settings.group} from {where}")
        try:
            with stop_on_signals(stop), Stream(self.pipeline, self.settings.group, from_beginning) as stream:
                last_message = last_probe = last_publish = last_refresh = time.monotonic()
                while not stop.is_set() and (max_minutes is None or self.scored < max_minutes):
                    want = (
                        POLL_RECORDS if max_minutes is None else min(POLL_RECORDS, max_minutes - self.scored)
                    )
                    polled = stream.poll(POLL_MS, want)
                    now = time.monotonic()
                    if polled.messages:
                        last_message = now
                        self._take(polled.rows, polled.bad)
                        stream.scored(polled)
                    if now - last_publish >= PUBLISH_S:
                        last_publish = now
                        self._publish(stream)
                    if now - last_refresh >= self.settings.refresh_s:
                        last_refresh = now
                        self._refresh()
                    silent = now - last_message
                    if idle_timeout_s is not None and silent >= idle_timeout_s:
                        log.info("no message for %.1f s: stopping", idle_timeout_s)
                        break
                    if silent >= PROBE_S and now - last_probe >= PROBE_S:
                        last_probe = now
                        admin_client(self.pipeline.bootstrap).close()  # gone: BrokerUnavailable, exit 3
                self._publish(stream, final=True)
        finally:
            if self.runs is not None:
                self.runs.close()
            self.exporter.close()
        return MonitorSummary(self.scored, self.rows_read, self.bad, time.monotonic() - started, self.table())

    def _take(self, rows: Any, bad: list[str]) -> None:
        """Score one poll's rows with every version in the lineup, at once per version."""
        self.exporter.bad_messages(bad)
        self.bad += len(bad)
        self.rows_read += len(rows)
        self.exporter.rows_read.inc(len(rows))
        if not len(rows):
            return
        ready = self.truth.take(rows)
        self.exporter.newest.set(float(rows[:, 0].max()))
        for member in self.lineup.all():
            key = (member.spec.registered_name, member.version)
            try:
                got = member.score(ready)
            except Exception as exc:  # one version failing must not stop the others, nor the loop
                self.exporter.scoring_errors.labels(*key).inc()
                if key not in self._failed:
                    self._failed.add(key)
                    log.warning("%s failed to score a poll: %s: %s", member.label, type(exc).__name__, exc)
                continue
            if got is not None:
                log_ = self.logs.setdefault(key, RollingLog(member.spec.kind, max(self.settings.windows)))
                log_.add(*got)
        self.scored += ready.new
        self.exporter.rows_scored.inc(ready.new)

    def _publish(self, stream: Stream, final: bool = False) -> None:
        """Live figures to /metrics (and MLflow when due), verdicts judged, scored offsets committed."""
        members = self.lineup.all()
        figures, steps = {}, {}
        for member in members:
            key = (member.spec.registered_name, member.version)
            if key in self.logs:
                figures[key] = live(self.logs[key], self.settings.windows)
                steps[key] = self.logs[key].newest
                self.exporter.publish(*key, figures[key])
        for partition, lag in stream.lag().items():
            self.exporter.lag.labels(str(partition)).set(lag)
        if self.runs is not None and (final or self.runs.due()):
            self.runs.log(members, figures, steps)
        try:
            stream.commit()
        except KafkaError as exc:  # a rebalance in between: the next commit carries the same positions
            log.info("offset commit failed (%s); next time", exc)
        self._judge()

    def _judge(self) -> None:
        for kind, spec in SPECS.items():
            versions = {
                m.version: self.logs[(spec.registered_name, m.version)]
                for m in self.lineup.members.get(kind, [])
                if (spec.registered_name, m.version) in self.logs
            }
            champion = self.lineup.champions.get(kind)
            for verdict in self.judge.judge(spec, champion, versions):
                self.report(verdict.line)
                pair = (kind, verdict.challenger, champion)
                if verdict.challenger is not None and self.gate is not None and pair not in self._handed:
                    self._handed.add(pair)  # one hand-off per challenger and champion: the gate runs Spark
                    self._hand_to_gate(kind)

    def _hand_to_gate(self, kind: str) -> None:
        assert self.gate is not None
        self.report(f"--promote: handing {SPECS[kind].registered_name} to the promotion gate")
        try:
            self.report(self.gate(kind))
        except Exception as exc:  # a refusal or a failure of the gate is news, not the end of monitoring
            self.report(f"promotion gate for {SPECS[kind].registered_name} did not run: {exc}")
        self._refresh()

    def _refresh(self) -> None:
        try:
            changes = self.lineup.refresh()
        except RegistryUnavailable as exc:
            self.exporter.registry_errors.inc()
            if not self._store_down:
                log.warning("%s; scoring the versions loaded until it answers", exc)
            self._store_down = True
            return
        if self._store_down:
            log.warning("the MLflow registry answers again")
        self._store_down = False
        self._lineup_changed(changes)

    def _lineup_changed(self, changes: list[str]) -> None:
        for line in changes:
            self.report(line)
        if self.runs is not None:
            self.runs.open(self.lineup.all())
        scored = {(m.spec.registered_name, m.version) for m in self.lineup.all()}
        for key in list(self.logs):
            if key not in scored:
                self.exporter.forget(*key)
                if self.runs is not None:
                    self.runs.finish(key)
        self.exporter.lineup((m.spec.registered_name, m.version, m.role) for m in self.lineup.all())

    def table(self) -> list[dict[str, Any]]:
        """One row per version scored and window: its live primary metric and its baseline's."""
        roles = {(m.spec.registered_name, m.version): m.role for m in self.lineup.all()}
        rows = []
        for (name, version), log_ in sorted(self.logs.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
            spec = next(s for s in SPECS.values() if s.registered_name == name)
            for window, values in live(log_, self.settings.windows).items():
                key = spec.primary_metric
                rows.append(
                    {
                        "model": name,
                        "version": version,
                        "role": roles.get((name, version), "no longer scored"),
                        "window": f"{window}m",
                        "minutes": int(values["minutes"]),
                        "metric": key,
                        "value": values.get(key),
                        "baseline": values.get(f"baseline_{key}"),
                    }
                )
        return rows


def monitor(
    pipeline: PipelineSettings,
    training: TrainingSettings,
    settings: MonitorSettings,
    *,
    max_minutes: int | None = None,
    idle_timeout_s: float | None = None,
    from_beginning: bool = False,
    gate: Gate | None = None,
    report: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> MonitorSummary:
    """Score the topic live until a bound holds; what `btcflow monitor` calls."""
    session = Monitor(pipeline, training, settings, report, gate)
    session.start()
    try:
        return session.run(max_minutes, idle_timeout_s, from_beginning, stop)
    finally:
        session.exporter.close()
