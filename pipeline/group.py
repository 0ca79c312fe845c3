"""Membership of the batching consumer group: joining it, following its rebalances, deciding where each
assigned partition starts (from the dataset's own record, never from the group's committed offsets),
and running several members at once (`btcflow consume --instances N`).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import AuthorizationError, KafkaError

from core.credentials import Credential
from core.dataset import BatchEntry, resume_offsets
from core.errors import BrokerUnavailable
from pipeline.errors import OffsetMismatch
from pipeline.settings import PipelineSettings
from services.kafka.admin import admin_client
from services.kafka.auth import CONSUMER
from services.kafka.clients import connect_error, refused, sasl_options

log = logging.getLogger("pipeline")

POLL_RECORDS = 50_000  # rows handed over per poll: large enough to amortise, small enough to stay responsive
METADATA_MAX_AGE_MS = 5_000  # a partition added to the topic joins the assignment within seconds


class Rebalances(ConsumerRebalanceListener):
    """Runs on kafka-python's event loop, where nothing may block: it pauses each newly assigned
    partition (nothing is fetched before the loop decides, in its own thread, where it starts), gives
    it a provisional position so that kafka-python never falls back on the group's committed offset,
    and counts the change for the loop to see."""

    def __init__(self) -> None:
        self.consumer: KafkaConsumer | None = None
        self.generation = 0

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.generation += 1

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.generation += 1
        if self.consumer is not None and assigned:
            self.consumer.pause(*assigned)
            self.consumer.seek_to_beginning(*assigned)


def open_consumer(settings: PipelineSettings, group_id: str, listener: Rebalances) -> KafkaConsumer:
    """A member of `group_id` subscribed to the topic, with offsets committed by hand and no silent
    offset reset: every position is set by `start_offsets` after checking it against the topic."""
    credential = settings.kafka_credential(CONSUMER)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            group_id=group_id,
            client_id="btcflow-consumer",
            session_timeout_ms=10_000,  # a SIGKILLed member's partitions move on within ~10 s
            heartbeat_interval_ms=2_000,
            enable_auto_commit=False,
            auto_offset_reset="none",
            check_crcs=True,  # native with the crc32c package (pinned); a corrupt batch must not land
            fetch_max_bytes=16 * 1024 * 1024,  # bigger buys nothing: decoding, not fetching, is the cost
            max_partition_fetch_bytes=8 * 1024 * 1024,
            max_poll_records=POLL_RECORDS,
            max_poll_interval_ms=120_000,  # writing a 2.33M-row batch takes seconds, not minutes
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            metrics_enabled=False,
            bootstrap_timeout_ms=5000,
            request_timeout_ms=30_000,
            **sasl_options(credential),
        )
        listener.consumer = consumer
        consumer.subscribe([settings.topic], listener=listener)
    except KafkaError as exc:
        raise connect_error(settings.bootstrap, exc, credential) from exc
    return consumer


def topic_id(bootstrap: str, topic: str, credential: Credential | None = None) -> str | None:
    """The topic's id (a new one each time a topic of that name is created); None if not reported."""
    admin = admin_client(bootstrap, credential=credential)
    try:
        described = admin.describe_topics([topic])
    except AuthorizationError as exc:
        raise refused(bootstrap, exc, credential, f"describing {topic}") from exc
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {bootstrap} did not describe {topic}: {exc}") from exc
    finally:
        admin.close()
    found = described[0].get("topic_id") if described else None
    return str(found) if found and str(found) != "00000000-0000-0000-0000-000000000000" else None


def start_offsets(
    consumer: KafkaConsumer,
    assigned: set[TopicPartition],
    entries: list[BatchEntry],
    live_topic_id: str | None,
    *,
    from_beginning: bool,
    where: str,
) -> dict[TopicPartition, int]:
    """Where each assigned partition starts: right after the last offset the dataset records for it,
    at its beginning when the dataset has none (a new dataset, a new partition).

    A recorded offset that the topic can no longer serve stops the run (OffsetMismatch, exit 2) unless
    `from_beginning`: offsets deleted by retention (a gap), a topic that ends before it or that was
    deleted and recreated since (the same offsets would be other rows).
    """
    begin, end = consumer.beginning_offsets(list(assigned)), consumer.end_offsets(list(assigned))
    written_from = next((e.topic_id for e in reversed(entries) if e.topic_id), None)
    recreated = live_topic_id is not None and written_from not in (None, live_topic_id)
    old = resume_offsets(entries)  # what the dataset last read, whatever topic it came from
    resume = resume_offsets(entries, live_topic_id)  # what it read from the topic there is now
    starts: dict[TopicPartition, int] = {}
    for tp in sorted(assigned):
        first, last, at = begin[tp], end[tp], resume.get(tp.partition)
        problem = None
        if recreated and not from_beginning and tp.partition in old:
            held = f"offsets {first}-{last - 1}" if last > first else "no message"
            at, problem = (
                old[tp.partition],
                f"the topic was deleted and recreated since (it holds {held} now)",
            )
        elif at is not None and at < first:
            problem = f"the topic now begins at offset {first} (retention deleted offsets {at}-{first - 1})"
        elif at is not None and at > last:  # the same topic lost messages: no way to continue this dataset
            raise OffsetMismatch(
                f"partition {tp.partition} of {tp.topic}: the dataset in {where} resumes at offset {at} "
                f"but the topic ends at offset {last}; write to a new --out"
            )
        if problem and not from_beginning:
            raise OffsetMismatch(
                f"partition {tp.partition} of {tp.topic}: the dataset in {where} resumes at offset {at} "
                f"but {problem}; use a new --out, or rerun with --from-beginning to read the partition "
                f"from its beginning ({first}) into this dataset"
            )
        if problem:
            log.warning(
                "partition %d: %s; --from-beginning: reading it from %d", tp.partition, problem, first
            )
            at = first
        starts[tp] = first if at is None else at
    return starts


def run_members(
    count: int, member_args: list[str], stop: threading.Event, tick: Callable[[], None] = lambda: None
) -> list[tuple[int, str]]:
    """Start `count` `btcflow consume` processes with `member_args` and wait for all of them, calling
    `tick` about once a second meanwhile (the progress line).

    A stop (SIGINT/SIGTERM to this process) is passed on as SIGTERM, so each member ends cleanly.
    Returns each member's exit status and last line of output.
    """
    command = [sys.executable, "-m", "btcflow.cli", "consume", *member_args]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    outputs: list[str] = [""] * count
    readers = [
        threading.Thread(target=lambda i=i, p=p: outputs.__setitem__(i, p.communicate()[0]), daemon=True)
        for i, p in enumerate(procs)
    ]
    for reader in readers:
        reader.start()
    forwarded = False
    while any(p.poll() is None for p in procs):
        if stop.is_set() and not forwarded:
            forwarded = True
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        tick()
        time.sleep(1.0)
    for reader in readers:
        reader.join(timeout=10)
    # a member killed by signal N reports -N; say it as a shell would (128 + N), never as success
    statuses = [p.returncode if p.returncode >= 0 else 128 - p.returncode for p in procs]
    return [
        (status, (out.strip().splitlines() or [""])[-1])
        for status, out in zip(statuses, outputs, strict=True)
    ]
