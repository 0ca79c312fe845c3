"""The optional prediction log: every answered prediction as one JSON message on a Kafka topic.

A request only appends what it answered to a bounded queue, under a lock held for an append, and never
waits: when the queue is full the rows are dropped and counted. One thread per process owns the
kafka-python producer (kafka-python directly: `serving` imports nothing of `pipeline`), turns queued
answers into messages every few milliseconds and sends them. A broker that is down costs the thread, not a
request: it tries to connect again every few seconds and drops (and counts) what arrives meanwhile.
At most `capacity` rows wait in the queue and `capacity` more in the producer, unacknowledged.

A message (no key, so kafka-python's sticky partitioner needs no hashing):
`{"time": "2026-01-02T03:04:05.678901+00:00", "model": {"name", "version", "run_id"},
  "inputs": {"open": 4.58, "volume": 1.5}, "outputs": {"predicted_high": 4.63, "predicted_low": 4.55}}`
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaProducer
from kafka.codec import has_lz4
from kafka.errors import KafkaError, TopicAlreadyExistsError

from serving.metrics import Metrics

log = logging.getLogger("serving")

TICK_S = 0.05  # how often the sender thread looks at the queue: a message's latency, not a request's
RETRY_S = 5.0  # between attempts to reach a broker that did not answer
CONNECT_TIMEOUT_S = 2.0  # one attempt to reach it
DELIVERY_TIMEOUT_S = 30.0  # a message the broker has not acknowledged by then is dropped

Answered = tuple[float, Mapping[str, str], Mapping[str, Sequence[Any]], Mapping[str, Sequence[Any]], int]


def messages(item: Answered) -> list[bytes]:
    """One JSON message per row of an answered request (when, model ref, input and output columns, rows).

    orjson writes the datetime itself (RFC 3339, microseconds): a third of the cost of `isoformat()`.
    """
    at, model, inputs, outputs, rows = item
    when = datetime.fromtimestamp(at, UTC)
    if rows == 1:  # a GET
        row_in = {k: v[0] for k, v in inputs.items()}
        row_out = {k: v[0] for k, v in outputs.items()}
        return [orjson.dumps({"time": when, "model": model, "inputs": row_in, "outputs": row_out})]
    return [
        orjson.dumps(
            {
                "time": when,
                "model": model,
                "inputs": {k: v[i] for k, v in inputs.items()},
                "outputs": {k: v[i] for k, v in outputs.items()},
            }
        )
        for i in range(rows)
    ]


class PredictionLog:
    """Answered predictions to `topic`, sent by a thread of its own between `start()` and `stop()`."""

    def __init__(self, topic: str, bootstrap: str, capacity: int, metrics: Metrics | None = None) -> None:
        self.topic = topic
        self.bootstrap = bootstrap
        self.capacity = capacity
        self.metrics = metrics or Metrics()
        self._queue: deque[Answered] = deque()
        self._waiting = 0  # rows in the queue
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_flight: deque[Any] = deque()  # the producer's futures, oldest first
        self._flush_s = 5.0
        self._dropped = self.metrics.log_dropped
        self._sent = self.metrics.log_sent

    # -- the request path ------------------------------------------------------------------------------
    def offer(
        self,
        model: Mapping[str, str],
        inputs: Mapping[str, Sequence[Any]],
        outputs: Mapping[str, Sequence[Any]],
        rows: int,
    ) -> None:
        """Queue one answered request's rows, or drop and count them when the queue is full. Never waits."""
        item = (time.time(), model, inputs, outputs, rows)
        with self._lock:
            if self._waiting + rows <= self.capacity:
                self._queue.append(item)
                self._waiting += rows
                return
        self._dropped.inc(rows)

    # -- the sender thread -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="btcflow-prediction-log", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send what is queued, wait up to `timeout_s` for the broker to take it, then close."""
        if self._thread is not None:
            self._flush_s = timeout_s
            self._stopping.set()
            self._thread.join(timeout_s + CONNECT_TIMEOUT_S + 5.0)
            self._thread = None

    def _take(self) -> list[Answered]:
        with self._lock:
            taken, self._queue = list(self._queue), deque()
            self._waiting = 0
        return taken

    def _run(self) -> None:
        producer: KafkaProducer | None = None
        partitions: list[int] = []
        retry_at = 0.0
        down = False
        while True:
            stopping = self._stopping.wait(TICK_S)
            self._settle()
            if len(self._in_flight) < self.capacity or stopping:
                taken = self._take()
                if taken and producer is None and time.monotonic() >= retry_at:
                    producer, partitions = self._connect()
                    if producer is None:
                        retry_at = time.monotonic() + RETRY_S
                        if not down:
                            log.warning(
                                "prediction log: Kafka at %s not reachable; dropping predictions and "
                                "trying again every %.0fs",
                                self.bootstrap,
                                RETRY_S,
                            )
                        down = True
                    elif down:
                        log.warning("prediction log: Kafka at %s reachable again", self.bootstrap)
                        down = False
                if producer is not None:
                    partitions.append(partitions.pop(0))  # each tick's messages to the next partition
                    self._send(producer, partitions[0], taken)
                elif taken:
                    self._dropped.inc(sum(item[4] for item in taken))
            self.metrics.log_queue.set(self._waiting)
            if stopping:
                break
        if producer is not None:
            self._close(producer, self._flush_s)
        self._settle()
        self.metrics.log_queue.set(0)

    def _connect(self) -> tuple[KafkaProducer | None, list[int]]:
        """A producer and the topic's partitions, the topic created if missing (the embedded broker creates
        none by itself); (None, []) when the broker does not answer."""
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                client_id="btcflow-gateway-log",
                bootstrap_timeout_ms=int(CONNECT_TIMEOUT_S * 1000),
                request_timeout_ms=int(CONNECT_TIMEOUT_S * 1000),
            )
            try:
                brokers = len(admin.describe_cluster()["brokers"]) or 1
                with contextlib.suppress(TopicAlreadyExistsError):
                    spec = {"num_partitions": 1, "replication_factor": min(3, brokers)}
                    admin.create_topics({self.topic: spec})
            finally:
                admin.close()
            producer = KafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id="btcflow-gateway-log",
                acks=1,  # best effort: a log, not the record of truth
                enable_idempotence=False,
                linger_ms=20,
                batch_size=256 * 1024,
                compression_type="lz4" if has_lz4() else None,
                max_block_ms=int(CONNECT_TIMEOUT_S * 1000),
                bootstrap_timeout_ms=int(CONNECT_TIMEOUT_S * 1000),
                request_timeout_ms=int(DELIVERY_TIMEOUT_S * 1000 / 3),
                delivery_timeout_ms=int(DELIVERY_TIMEOUT_S * 1000),
                reconnect_backoff_max_ms=1_000,
                metrics_enabled=False,
            )
        except KafkaError:
            return None, []
        try:
            return producer, sorted(producer.partitions_for(self.topic))
        except KafkaError:
            with contextlib.suppress(KafkaError):
                producer.close(timeout=0)
            return None, []

    def _send(self, producer: KafkaProducer, partition: int, taken: list[Answered]) -> None:
        """Each message to `partition`: naming it skips kafka-python's partitioner, a tenth of `send`."""
        send, in_flight, topic = producer.send, self._in_flight, self.topic
        for item in taken:
            for i, value in enumerate(messages(item)):
                try:
                    in_flight.append(send(topic, value, partition=partition))
                except KafkaError:  # no metadata within max_block_ms: the broker went away
                    self._dropped.inc(item[4] - i)
                    break

    def _settle(self) -> None:
        """Count the messages the broker acknowledged (sent) or that failed (dropped), oldest first."""
        in_flight, sent, failed = self._in_flight, 0, 0
        while in_flight and in_flight[0].is_done:
            if in_flight.popleft().succeeded():
                sent += 1
            else:
                failed += 1
        if sent:
            self._sent.inc(sent)
        if failed:
            self._dropped.inc(failed)

    def _close(self, producer: KafkaProducer, timeout_s: float) -> None:
        """Flush within `timeout_s`; what the broker has not taken by then fails (counted as dropped).

        kafka-python's `close` flushes first and raises when that times out, leaving the producer open:
        its sender thread is stopped without sending first, then `close` has nothing left to wait for.
        """
        flushed = True
        try:
            producer.flush(timeout=timeout_s)
        except KafkaError:
            flushed = False
            sender = getattr(producer, "_sender", None)
            if sender is not None:
                sender.force_close()
                sender.join(timeout_s)
        with contextlib.suppress(KafkaError):
            producer.close(timeout=timeout_s if flushed else 0)
