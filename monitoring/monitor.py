"""`btcflow monitor`'s loop: read each poll, score it with every version in the lineup, judge, publish.

Bounded like every loop here: `max_minutes` rows scored, `idle_timeout_s` without a message, or the stop
flag (SIGINT/SIGTERM, core.signals). Once a second the live metrics go to /metrics, the verdicts are
judged (and a changed one said in one line), and the scored offsets are committed; every scored minute's
figures go to MLflow as one point, sent at most every `log_interval_s` (monitoring.runs); every
`refresh_s` the registry is asked again. A registry that stops answering keeps the lineup as loaded (said
once); one that does not answer at start is exit 3. With `gates` (--promote), a challenger that starts
beating Production live is handed to the promotion gate, which runs in a child process
(monitoring.promotion) while the loop goes on; when it ends, what it said is reported and the registry
asked again at once. Whatever ends the monitor (a bound, a signal, an error, even at start) ends the gate
child and every monitoring run it opened; a version that leaves the lineup is dropped with its run ended.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka.errors import KafkaError

from core.errors import BadInput, RegistryUnavailable
from core.signals import stop_on_signals
from monitoring.exporter import Exporter
from monitoring.promotion import Gates
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
from services.kafka.auth import MONITOR
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
        gates: Gates | None = None,
    ) -> None:
        self.pipeline, self.training, self.settings = pipeline, training, settings
        self.report, self.gates = report, gates
        self.exporter = Exporter()
        self.lineup = Lineup(training.tracking_uri, settings.challengers)
        self.judge = Judge(settings.windows[0], settings.min_minutes, settings.hold_minutes)
        self.truth = Truth()
        self.logs: dict[tuple[str, str], RollingLog] = {}
        self.left: dict[tuple[str, str], dict[int, dict[str, float]]] = {}  # last figures of versions gone
        self.runs: MonitorRuns | None = None
        self.scored = self.rows_read = self.bad = 0
        self.signal: str | None = None  # the signal that stopped the loop, if one did
        self._store_down = False
        self._closed = False
        self._failed: set[tuple[str, str]] = set()
        self._handed: set[tuple[str, str | None, str | None]] = set()

    # -- setting up -------------------------------------------------------------------------------
    def start(self) -> None:
        """Reach MLflow (exit 3 if not), load the lineup (exit 3 if the registry does not answer), serve.
        Raising, it leaves nothing behind for its caller to end but what `close` ends."""
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

    def close(self, status: str = "FINISHED", reason: str = "stopped") -> None:
        """End what the session started, once: the gate child (and its JVM), the runs (with `status` and
        `reason`), /metrics."""
        if self._closed:
            return
        self._closed = True
        if self.gates is not None:
            self.gates.stop()
        if self.runs is not None:
            self.runs.close(status, reason)
        self.exporter.close()

    def on_signal(self, signum: int) -> None:
        """Remember the signal that stops the loop (the runs end KILLED, naming it)."""
        self.signal = signal.Signals(signum).name

    # -- the loop ------------------------------------------------------------------------------------
    def run(
        self,
        max_minutes: int | None = None,
        idle_timeout_s: float | None = None,
        from_beginning: bool = False,
        stop: threading.Event | None = None,
    ) -> MonitorSummary:
        stop = stop or threading.Event()
        started = time.monotonic()
        status, reason = "FINISHED", "stopped by its caller"
        try:
            with stop_on_signals(stop, self.on_signal):
                reason = self._loop(max_minutes, idle_timeout_s, from_beginning, stop) or reason
            if self.signal is not None:
                status, reason = "KILLED", f"{self.signal} received"
        except BaseException as exc:
            status, reason = ending(exc)
            raise
        finally:
            self.close(status, reason)
        return MonitorSummary(self.scored, self.rows_read, self.bad, time.monotonic() - started, self.table())

    def _loop(
        self,
        max_minutes: int | None,
        idle_timeout_s: float | None,
        from_beginning: bool,
        stop: threading.Event,
    ) -> str | None:
        """Poll, score, publish until a bound holds or `stop` is set; the bound that ended it, if one did."""
        credential = self.pipeline.kafka_credential(MONITOR)
        pipeline = self.pipeline
        ensure_topic(pipeline.bootstrap, pipeline.topic, pipeline.partitions, credential)  # exit 3 fast
        where = "its beginning" if from_beginning else "the group's offsets (a new group: the end)"
        self.report(f"reading {self.pipeline.topic} as group {self.settings.group} from {where}")
        ended: str | None = None
        with Stream(self.pipeline, self.settings.group, from_beginning) as stream:
            last_message = last_probe = last_publish = last_refresh = time.monotonic()
            while not stop.is_set():
                if max_minutes is not None and self.scored >= max_minutes:
                    ended = f"--max-minutes {max_minutes} scored"
                    break
                want = POLL_RECORDS if max_minutes is None else min(POLL_RECORDS, max_minutes - self.scored)
                polled = stream.poll(POLL_MS, want)
                now = time.monotonic()
                if polled.messages:
                    last_message = now
                    self._take(polled.rows, polled.bad)
                    stream.scored(polled)
                if now - last_publish >= PUBLISH_S:
                    last_publish = now
                    self._publish(stream)
                if self.gates is not None and (done := self.gates.poll()) is not None:
                    kind, said = done
                    self.report(f"promotion gate for {SPECS[kind].registered_name}: {said}")
                    self._refresh()
                if now - last_refresh >= self.settings.refresh_s:
                    last_refresh = now
                    self._refresh()
                silent = now - last_message
                if idle_timeout_s is not None and silent >= idle_timeout_s:
                    log.info("no message for %.1f s: stopping", idle_timeout_s)
                    ended = f"no message for {idle_timeout_s:g} s"
                    break
                if silent >= PROBE_S and now - last_probe >= PROBE_S:
                    last_probe = now
                    # gone: BrokerUnavailable, exit 3
                    admin_client(self.pipeline.bootstrap, credential=credential).close()
            self._publish(stream, final=True)
        return ended

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
                log_ = self.logs.get(key)
                if log_ is None:
                    windows = self.settings.windows
                    log_ = self.logs[key] = RollingLog(member.spec.kind, max(windows), series=windows)
                log_.add(*got)
        self.scored += ready.new
        self.exporter.rows_scored.inc(ready.new)

    def _publish(self, stream: Stream, final: bool = False) -> None:
        """Live figures to /metrics (and MLflow when due), verdicts judged, scored offsets committed."""
        members = self.lineup.all()
        for member in members:
            key = (member.spec.registered_name, member.version)
            if key in self.logs:
                self.exporter.publish(*key, live(self.logs[key], self.settings.windows))
                if self.runs is not None:
                    self.runs.take(key, self.logs[key].drain())
        self.exporter.lag.clear()  # a partition revoked meanwhile is another member's to report
        for partition, lag in stream.lag().items():
            self.exporter.lag.labels(str(partition)).set(lag)
        if self.runs is not None and (final or self.runs.due()):
            self.runs.log(members)
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
                if verdict.challenger is not None and self.gates is not None and pair not in self._handed:
                    self._handed.add(pair)  # one hand-off per challenger and champion: the gate runs Spark
                    self._hand_to_gate(kind)

    def _hand_to_gate(self, kind: str) -> None:
        """Start the gate's child (or queue it); its end is reported by the loop, never waited for."""
        assert self.gates is not None
        name = SPECS[kind].registered_name
        try:
            started = self.gates.hand(kind)
        except OSError as exc:  # a gate that cannot start is news, not the end of monitoring
            self.report(f"promotion gate for {name} did not start: {exc}")
            return
        self.report(f"--promote: handing {name} to the promotion gate ({started})")

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
        for key in [k for k in self.logs if k not in scored]:  # gone: its log and figures are dropped
            log_ = self.logs.pop(key)
            self.left[key] = live(log_, self.settings.windows)  # for the summary table: a few floats
            self.exporter.forget(*key)
            self.judge.forget(next(s.name for s in SPECS.values() if s.registered_name == key[0]), key[1])
            self._failed.discard(key)
        if self.runs is not None:
            for key in [k for k in self.runs.run_ids if k not in scored]:
                self.runs.finish(key)
        for key in scored:
            self.left.pop(key, None)
        self.exporter.lineup((m.spec.registered_name, m.version, m.role) for m in self.lineup.all())

    def table(self) -> list[dict[str, Any]]:
        """One row per version scored and window: its live primary metric and its baseline's."""
        roles = {(m.spec.registered_name, m.version): m.role for m in self.lineup.all()}
        figures = {key: live(log_, self.settings.windows) for key, log_ in self.logs.items()} | self.left
        rows = []
        for (name, version), windows in sorted(figures.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
            spec = next(s for s in SPECS.values() if s.registered_name == name)
            for window, values in windows.items():
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


def ending(exc: BaseException) -> tuple[str, str]:
    """How an exception ends the monitoring runs: KILLED for Ctrl-C, else FAILED; the reason names it."""
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED", f"{type(exc).__name__}: {exc}"


def monitor(
    pipeline: PipelineSettings,
    training: TrainingSettings,
    settings: MonitorSettings,
    *,
    max_minutes: int | None = None,
    idle_timeout_s: float | None = None,
    from_beginning: bool = False,
    gates: Gates | None = None,
    report: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> MonitorSummary:
    """Score the topic live until a bound holds; what `btcflow monitor` calls. A signal during the start
    (loading the lineup) is kept and stops the loop before its first poll."""
    stop = stop or threading.Event()
    session = Monitor(pipeline, training, settings, report, gates)
    with stop_on_signals(stop, session.on_signal):
        try:
            session.start()
        except BaseException as exc:  # Kafka, MLflow or the port: the runs opened so far end FAILED
            session.close(*ending(exc))
            raise
    return session.run(max_minutes, idle_timeout_s, from_beginning, stop)
