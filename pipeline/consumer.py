"""The batching consumer: Kafka messages → batch files, exactly once across crashes and rebalances.

Any number of members of one consumer group may write one dataset. The dataset, not the group's
committed offsets, says where each partition resumes: on every assignment a member drops its open
batch and starts each of its partitions right after the last offset the manifest records (checked
against the topic, `pipeline.group.start_offsets`). A batch is committed by the store only if it
continues its partitions where the manifest leaves them; otherwise another member got there first,
and this member drops the batch and resyncs. Offsets are committed to the group after the manifest,
for tools like kafka-consumer-groups; nothing here reads them back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka import __version__ as kafka_version
from kafka.errors import AuthorizationError, KafkaError
from kafka.structs import OffsetAndMetadata

from core.errors import BrokerUnavailable
from core.progress import RowProgress
from core.signals import stop_on_signals
from pipeline import decoder
from pipeline.batching import BatchPolicy, OpenBatch
from pipeline.broker import ensure_topic
from pipeline.group import POLL_RECORDS, Rebalances, open_consumer, start_offsets, topic_id
from pipeline.messages import Rejected, parse_values, text
from pipeline.settings import PipelineSettings
from pipeline.store import BatchStore, Format, StaleBatch
from services.kafka.admin import admin_client
from services.kafka.auth import CONSUMER
from services.kafka.clients import refused

log = logging.getLogger("pipeline")

PROBE_S = 30.0  # after this long without a message, check the broker still answers (kafka-python retries)
COUNTS = ("batches", "rejected")  # beside the rows on the progress line
POLL_MS = 500  # longest wait inside one poll: bounds how late a stop, a window or an idle timeout is seen


@dataclass(frozen=True)
class ConsumeSummary:
    rows: int
    batches: int
    rejected: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"consumed {self.rows:,} rows into {self.batches} batches, {self.rejected} rejected, "
            f"in {self.seconds:.1f} s ({self.rows_per_s:,.0f} rows/s)"
        )


class BatchingConsumer:
    """One consumer-group member feeding one (possibly shared) batch store; `run()` is the bounded loop."""

    def __init__(
        self,
        settings: PipelineSettings,
        store: BatchStore,
        policy: BatchPolicy,
        group_id: str,
        clock: Callable[[], float] = time.monotonic,
        from_beginning: bool = False,
        bulk: bool = True,
    ) -> None:
        self.settings = settings
        self.bulk = bulk  # decode record batches in bulk (pipeline.decoder) when kafka-python allows it
        self.credential = settings.kafka_credential(CONSUMER)
        self.store = store
        self.clock = clock
        self.group_id = group_id
        self.from_beginning = from_beginning
        self.batch = OpenBatch(policy, clock)
        self.pending_rejects: list[Rejected] = []
        self.topic_id: str | None = None
        self.rows_read = 0
        self.rows_written = 0
        self.rejected = 0
        self.batches = 0

    def _drop_open_batch(self) -> None:
        """The open batch's rows are someone else's now (or already written): they will be read, and
        counted, again, so they come off the counts."""
        self.rows_read -= self.batch.rows
        self.rejected -= len(self.pending_rejects)
        self.batch.clear()
        self.pending_rejects.clear()

    def _resync(self, consumer: KafkaConsumer) -> None:
        """After an assignment change or a stale batch: start every assigned partition where the
        dataset, as it is on disk now, leaves it, and let fetching go on."""
        self._drop_open_batch()
        assigned = consumer.assignment()
        if not assigned:
            return
        self.topic_id = topic_id(self.settings.bootstrap, self.settings.topic, self.credential)
        starts = start_offsets(
            consumer,
            assigned,
            self.store.entries,
            self.topic_id,
            from_beginning=self.from_beginning,
            where=self.store.where,
        )
        try:
            for tp, offset in starts.items():
                consumer.seek(tp, offset)
            consumer.resume(*assigned)
        except (ValueError, KeyError):  # the lookups above let a new rebalance in: the loop resyncs again
            log.info("the assignment changed while resyncing")
            return
        log.info("assigned %s; starting at %s", sorted(tp.partition for tp in assigned), starts)

    def _take(self, polled: dict[TopicPartition, list[Any]], runs: bool = False) -> int:
        """Move one poll's messages (decoder runs, or kafka-python's records when `runs` is False)
        into the open batch; returns how many messages came."""
        messages = 0
        for tp, got in polled.items():
            if not got:
                continue
            run = decoder.Run.joined(got) if runs else decoder.Run.of(got)
            messages += len(run)
            rows, bad = parse_values(run.values)
            for i, reason in bad:
                key, value = text(run.keys[i]), text(run.values[i])
                self.pending_rejects.append(Rejected(tp.partition, run.offsets[i], key, value, reason))
            self.rejected += len(bad)
            self.rows_read += len(rows)
            self.batch.add(tp.partition, run.offsets[0], run.offsets[-1], rows)
        return messages

    def _close_batch(self, consumer: KafkaConsumer) -> bool:
        """Commit the open batch to the store, then its offsets to the group. False when the batch was
        stale (another member wrote those offsets first): it is dropped and every partition resynced."""
        table = self.batch.table()
        rejects = [r.__dict__ for r in self.pending_rejects]
        try:
            entry = self.store.write_batch(table, self.batch.offsets, rejects, self.topic_id)
        except StaleBatch as exc:
            log.warning("batch dropped, %s: resyncing from the manifest", exc)
            self._resync(consumer)
            return False
        finally:
            del table
        self.rows_written += entry.rows
        self.batches += 1
        self.batch.clear()
        self.pending_rejects.clear()
        offsets = {
            TopicPartition(self.settings.topic, int(p)): OffsetAndMetadata(last + 1, "", -1)
            for p, (_, last) in entry.offsets.items()
        }
        try:
            consumer.commit(offsets)
        except KafkaError as exc:  # the manifest already holds the truth; the group merely lags
            log.warning("offset commit after batch %d failed (%s); the manifest is ahead", entry.batch, exc)
        log.info("batch %d: %d rows, offsets %s", entry.batch, entry.rows, entry.offsets)
        return True

    def run(
        self,
        max_batches: int | None = None,
        idle_timeout_s: float | None = None,
        stop: threading.Event | None = None,
        progress: bool = True,
    ) -> ConsumeSummary:
        stop = stop or threading.Event()
        listener = Rebalances()
        started = self.clock()
        consumer = open_consumer(self.settings, self.group_id, listener)
        runs = self.bulk and decoder.install(consumer)
        if self.bulk and not runs:
            log.warning("kafka-python %s, not the bulk decoder's: decoding record by record", kafka_version)
        seen_generation = 0
        last_message = last_probe = self.clock()
        try:
            with stop_on_signals(stop), RowProgress(progress, "consuming", counts=COUNTS) as bar:
                while not stop.is_set() and (max_batches is None or self.batches < max_batches):
                    wait = POLL_MS / 1000
                    left = self.batch.seconds_left()
                    if left is not None:
                        wait = min(wait, left)
                    room = self.batch.room()
                    polled = consumer.poll(
                        timeout_ms=int(wait * 1000), max_records=min(room or POLL_RECORDS, POLL_RECORDS)
                    )
                    now = self.clock()
                    if listener.generation != seen_generation:
                        seen_generation = listener.generation
                        self._resync(consumer)  # what this poll brought predates the new assignment
                        polled = {}
                        last_message = now  # idle time counts from the assignment, not from the join
                    if self._take(polled, runs):
                        last_message = now
                    if self.batch.is_due():  # never without rows: rejected messages alone stay pending
                        self._close_batch(consumer)
                    silent = now - last_message
                    if idle_timeout_s is not None and silent >= idle_timeout_s:
                        if self.batch.rows:
                            self._close_batch(consumer)
                        log.info("no message for %.1f s: stopping", idle_timeout_s)
                        break
                    if silent >= PROBE_S and now - last_probe >= PROBE_S:
                        last_probe = now
                        # gone: BrokerUnavailable, exit 3
                        admin_client(self.settings.bootstrap, credential=self.credential).close()
                    bar.update(self.rows_read, batches=self.batches, rejected=self.rejected)
                bar.update(self.rows_read, batches=self.batches, rejected=self.rejected)
        except AuthorizationError as exc:  # the group or the topic is not this user's: exit 2
            what = f"reading {self.settings.topic} in group {self.group_id}"
            raise refused(self.settings.bootstrap, exc, self.credential, what) from exc
        except KafkaError as exc:  # poll, offsets: an infrastructure failure is exit 3, not a bug
            detail = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise BrokerUnavailable(
                f"Kafka at {self.settings.bootstrap} failed while consuming: {detail}"
            ) from exc
        finally:
            consumer.close(autocommit=False, timeout_ms=5000)
        if self.batch.rows or self.pending_rejects:
            log.info(
                "stopped with %d rows and %d rejected messages in the open batch: read again next run",
                self.batch.rows,
                len(self.pending_rejects),
            )
        return ConsumeSummary(self.rows_written, self.batches, self.rejected, self.clock() - started)


def consume(
    settings: PipelineSettings,
    out_dir: Path | str,
    batch_rows: int | None = None,
    window_s: float | None = None,
    max_batches: int | None = None,
    idle_timeout_s: float | None = None,
    fmt: Format = "parquet",
    progress: bool = True,
    group_id: str | None = None,
    stop: threading.Event | None = None,
    from_beginning: bool = False,
) -> ConsumeSummary:
    """Consume `settings.topic` into batch files under `out_dir` until a stop condition holds.

    Stops at `max_batches` batches, after `idle_timeout_s` without a message (closing the open batch
    first), or when `stop` is set / SIGINT or SIGTERM arrives (the open batch is left to the next run).
    Other members of the same group may write the same `out_dir` at the same time.
    """
    policy = BatchPolicy(batch_rows, window_s)
    store = BatchStore(out_dir, fmt)
    # BrokerUnavailable in seconds (BrokerAuthFailed when the cluster does not accept the credential)
    ensure_topic(settings.bootstrap, settings.topic, settings.partitions, settings.kafka_credential(CONSUMER))
    member = BatchingConsumer(
        settings, store, policy, group_id or settings.consumer_group, from_beginning=from_beginning
    )
    return member.run(max_batches, idle_timeout_s, stop, progress)
