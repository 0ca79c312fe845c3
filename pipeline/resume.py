"""Where a rerun picks up: the last Timestamp in each partition and the lines already in the DLQ.

A slice of the file goes to its own partition, its good rows have strictly increasing Timestamps (the
RowChecker rejects the rest), and the idempotent producer keeps one batch per partition in flight, so
a partition holds a prefix of its slice: the rows up to its last record's Timestamp. Bad rows of every
slice share the DLQ's one partition, keyed by line number; those already there are skipped by number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import AuthorizationError, KafkaError, KafkaTimeoutError

from core.credentials import Credential
from core.errors import BadInput, BrokerUnavailable
from pipeline.slices import Slice
from services.kafka.clients import connect_error, refused, sasl_options


@dataclass(frozen=True)
class Resume:
    """What one slice skips: good rows up to `after` (a Timestamp), bad rows at `dead_lines`."""

    after: float | None = None
    dead_lines: frozenset[int] = field(default_factory=frozenset)


def resume_points(
    bootstrap: str, topic: str, parts: list[Slice], timeout_s: float, credential: Credential | None = None
) -> list[Resume]:
    """One Resume per slice, read from the topic and `<topic>.dlq` before anything is sent.

    Refused (BadInput) when slices share a partition (more workers than partitions: the partition's
    last record says nothing about the other slices), or when a partition this run does not write
    holds rows (a run with another --workers wrote them: resuming would send them twice).
    """
    partitions = [p.partition for p in parts]
    if len(set(partitions)) < len(parts):
        raise BadInput(
            f"--resume needs one partition per worker, and {topic} has {len(set(partitions))} "
            f"for {len(parts)} workers: rerun with --workers {len(set(partitions))}"
        )
    consumer = _consumer(bootstrap, credential)
    try:
        deadline = time.monotonic() + timeout_s
        last = _last_keys(consumer, topic, deadline)
        dead = _dlq_lines(consumer, f"{topic}.dlq", deadline)
    except AuthorizationError as exc:
        raise refused(bootstrap, exc, credential, f"reading {topic} or {topic}.dlq for --resume") from exc
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {bootstrap} did not say where {topic} ends ({exc})") from exc
    finally:
        consumer.close(autocommit=False)
    strangers = sorted(set(last) - set(partitions))
    if strangers:
        raise BadInput(
            f"--resume: partition {strangers[0]} of {topic} holds rows but this run writes only "
            f"partition(s) {', '.join(map(str, sorted(partitions)))}: rerun with the --workers of "
            "the run that wrote it"
        )
    resumes = []
    for i, part in enumerate(parts):
        end = parts[i + 1].first_line if i + 1 < len(parts) else None
        lines = frozenset(n for n in dead if n >= part.first_line and (end is None or n < end))
        key = last.get(part.partition)
        resumes.append(Resume(_timestamp(key, topic, part.partition) if key is not None else None, lines))
    return resumes


def _consumer(bootstrap: str, credential: Credential | None) -> KafkaConsumer:
    try:
        return KafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="btcflow-resume",
            group_id=None,
            enable_auto_commit=False,
            max_poll_records=50_000,
            bootstrap_timeout_ms=5_000,
            **sasl_options(credential),
        )
    except KafkaError as exc:
        raise connect_error(bootstrap, exc, credential) from exc


def _ends(consumer: KafkaConsumer, topic: str) -> dict[TopicPartition, tuple[int, int]]:
    """[first offset, end offset) of each partition that holds records; none for a missing topic."""
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    if not parts:
        return {}
    starts, ends = consumer.beginning_offsets(parts), consumer.end_offsets(parts)
    return {tp: (starts[tp], ends[tp]) for tp in parts if ends[tp] > starts[tp]}


def _keys(
    consumer: KafkaConsumer, ranges: dict[TopicPartition, tuple[int, int]], deadline: float
) -> dict[TopicPartition, list[bytes]]:
    """The keys of the records in [start, end) of each partition, read with a plain assigned consumer."""
    keys: dict[TopicPartition, list[bytes]] = {tp: [] for tp in ranges}
    if not ranges:
        return keys
    consumer.assign(list(ranges))
    for tp, (start, _) in ranges.items():
        consumer.seek(tp, start)
    waiting = set(ranges)
    while waiting:
        if time.monotonic() > deadline:
            raise KafkaTimeoutError(f"{sorted(tp.partition for tp in waiting)} not read in time")
        for tp, records in consumer.poll(timeout_ms=500).items():
            end = ranges[tp][1]
            keys[tp].extend(r.key for r in records if r.offset < end)
        waiting = {tp for tp in waiting if consumer.position(tp) < ranges[tp][1]}
    return keys


def _last_keys(consumer: KafkaConsumer, topic: str, deadline: float) -> dict[int, bytes]:
    """The key of each partition's last record (offset end - 1)."""
    ranges = {tp: (end - 1, end) for tp, (_, end) in _ends(consumer, topic).items()}
    return {tp.partition: found[-1] for tp, found in _keys(consumer, ranges, deadline).items() if found}


def _dlq_lines(consumer: KafkaConsumer, dlq: str, deadline: float) -> set[int]:
    """Every line number already in the DLQ (bad rows are few: reading them all is cheap)."""
    found = _keys(consumer, _ends(consumer, dlq), deadline)
    return {int(key) for keys in found.values() for key in keys if key is not None and key.isdigit()}


def _timestamp(key: bytes, topic: str, partition: int) -> float:
    try:
        return float(key)
    except ValueError:
        raise BadInput(
            f"--resume: the last record of {topic} partition {partition} has key {key!r}, not a Timestamp"
        ) from None
