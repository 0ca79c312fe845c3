"""The monitor's seat on the topic: its own consumer group, each poll decoded at once, offsets after scoring.

Its group is not the batcher's, so it reads every minute without taking any from the batch files. A new
group starts at the end of the topic (live), or at its beginning with `from_beginning`; a known group
resumes at its committed offsets, which the monitor commits after scoring each poll. Values are decoded by
pipeline.messages, the batching consumer's own rule, so a row bad for one is bad for the other; a bad
message is returned with its reason, never raised. Lag comes from the high-water marks Kafka sends with
every fetch, so it costs no request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import AuthorizationError, KafkaError
from kafka.structs import OffsetAndMetadata

from core.dataset import COLUMNS
from core.errors import BrokerUnavailable
from pipeline.messages import parse_values
from pipeline.settings import PipelineSettings
from services.kafka.auth import MONITOR
from services.kafka.clients import connect_error, refused, sasl_options

log = logging.getLogger("monitoring")

POLL_RECORDS = 10_000  # a backlog is scored in slices this big, so publishing and refreshes keep their pace


@dataclass
class Polled:
    """One poll: its good rows (n, 6), the reasons of its bad messages, the offsets to commit after it."""

    rows: np.ndarray
    bad: list[str] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return len(self.rows) + len(self.bad)


class _Seats(ConsumerRebalanceListener):
    """Where an assigned partition starts: right after what this member scored of it, else at its
    beginning with `from_beginning`, else where the group committed (the end, for a new group).

    Without the first rule a rebalance soon after the start (before any commit) would send a new group
    back to the end of the topic, and the minutes in between would never be scored.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def on_partitions_revoked(self, revoked: Any) -> None:
        """Forget them: another member reads them now, and a later commit of this member's old positions
        would rewind it. (Not committed here: kafka-python runs listeners on its IO thread, where a
        blocking commit is refused; what was scored since the last commit, a second at most, is read
        again by the new owner.)"""
        self.stream.release(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        consumer, scored, released = self.stream.consumer, self.stream.position, self.stream.released
        assert consumer is not None
        for tp in assigned:
            if tp in released:  # revoked and given back (an eager rebalance revokes every partition)
                scored[tp] = released.pop(tp)
            if tp in scored:
                consumer.seek(tp, scored[tp])
            elif self.stream.from_beginning:
                consumer.seek_to_beginning(tp)
        released.clear()  # the others are another member's now
        log.info("assigned %s", sorted(tp.partition for tp in assigned))


class Stream:
    """A member of the monitor's group on the topic; a context manager that commits and closes."""

    def __init__(self, settings: PipelineSettings, group: str, from_beginning: bool = False) -> None:
        self.settings = settings
        self.group = group
        self.from_beginning = from_beginning
        self.credential = settings.kafka_credential(MONITOR)
        self.consumer: KafkaConsumer | None = None
        self.position: dict[TopicPartition, int] = {}
        self.released: dict[TopicPartition, int] = {}  # revoked, kept until the assignment that follows

    def __enter__(self) -> Stream:
        try:
            self.consumer = KafkaConsumer(
                bootstrap_servers=self.settings.bootstrap,
                group_id=self.group,
                client_id="btcflow-monitor",
                enable_auto_commit=False,
                auto_offset_reset="latest",
                session_timeout_ms=10_000,
                heartbeat_interval_ms=2_000,
                max_poll_records=POLL_RECORDS,
                max_poll_interval_ms=300_000,  # a poll is scored in well under a second
                metadata_max_age_ms=5_000,
                metrics_enabled=False,
                bootstrap_timeout_ms=5_000,
                request_timeout_ms=30_000,
                **sasl_options(self.credential),
            )
            self.consumer.subscribe([self.settings.topic], listener=_Seats(self))
        except KafkaError as exc:
            raise connect_error(self.settings.bootstrap, exc, self.credential) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self.consumer is not None:
            try:
                self.commit()
            except KafkaError as error:
                log.warning("last offset commit of group %s failed: %s", self.group, error)
            self.consumer.close(autocommit=False, timeout_ms=5000)
            self.consumer = None

    def poll(self, timeout_ms: int, max_records: int) -> Polled:
        """The next messages, at most `max_records`, decoded; KafkaError becomes BrokerUnavailable."""
        assert self.consumer is not None
        try:
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except AuthorizationError as exc:
            what = f"reading {self.settings.topic} in group {self.group}"
            raise refused(self.settings.bootstrap, exc, self.credential, what) from exc
        except KafkaError as exc:
            detail = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise BrokerUnavailable(
                f"Kafka at {self.settings.bootstrap} failed while monitoring: {detail}"
            ) from exc
        parts: list[np.ndarray] = []
        out = Polled(np.empty((0, len(COLUMNS))))
        for tp, records in polled.items():
            if not records:
                continue
            rows, bad = parse_values([r.value for r in records])
            parts.append(rows)
            for index, reason in bad:
                log.info(
                    "partition %d offset %d is not a row: %s", tp.partition, records[index].offset, reason
                )
                out.bad.append(reason)
            out.offsets[tp] = records[-1].offset + 1
        if parts:
            out.rows = np.concatenate(parts)
        return out

    def scored(self, polled: Polled) -> None:
        """The poll is scored: its offsets are the group's next commit."""
        self.position.update(polled.offsets)

    def release(self, revoked: Any) -> None:
        """Partitions taken away by a rebalance: out of every later commit and of the lag (kept aside
        until the assignment that follows, which may hand some of them back)."""
        for tp in revoked:
            if tp in self.position:
                self.released[tp] = self.position.pop(tp)
        log.info("revoked %s", sorted(tp.partition for tp in revoked))

    def commit(self) -> None:
        """Commit the positions scored so far of the partitions assigned now (a restart resumes after
        them); a partition revoked in between is never committed by this member again."""
        if self.consumer is None or not self.position:
            return
        assigned = self.consumer.assignment()
        offsets = {tp: OffsetAndMetadata(at, "", -1) for tp, at in self.position.items() if tp in assigned}
        if offsets:
            self.consumer.commit(offsets)

    def lag(self) -> dict[int, int]:
        """Messages after the scored position, per partition, as of the last fetch (partitions seen only)."""
        assert self.consumer is not None
        lags: dict[int, int] = {}
        for tp, at in self.position.items():
            try:
                high = self.consumer.highwater(tp)
            except Exception:  # no longer assigned (a rebalance): no figure
                continue
            if high is not None:
                lags[tp.partition] = max(high - at, 0)
        return lags
