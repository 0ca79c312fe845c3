"""The prediction log's Kafka side, a process of its own: JSON lines in on stdin, one message each out.

Why a process: kafka-python spends ~20 µs of Python per record (send, its future, the sender thread), and
in the gateway's process that work holds the GIL against the event loop: measured, it cost the single-row
GET rate about a quarter, twice its own CPU share, since every syscall of the loop then waits for the GIL.
Here it runs beside the gateway on its own interpreter; the gateway only writes bytes to a pipe.

    python -m serving.publisher TOPIC BOOTSTRAP CAPACITY FLUSH_S

It logs in as BTCFLOW_KAFKA_USERNAME / BTCFLOW_KAFKA_PASSWORD from its environment when both are set (the
gateway's `gateway` user on a cluster that requires authentication), never from its command line.

Reads newline-separated messages until stdin closes, then sends what it holds, waits up to FLUSH_S for the
broker to acknowledge it, and exits. Reports cumulative `<sent> <dropped>` lines on stdout whenever they
change. A broker that does not answer is tried again every RETRY_S; what arrives meanwhile, and what exceeds
CAPACITY unacknowledged messages, is dropped and counted. It ignores SIGINT and SIGTERM: the end of its
input (the gateway stopping, or dying) is what ends it, so a Ctrl-C to the terminal's process group never
loses what the gateway already handed over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import time
from collections import deque
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.codec import has_lz4
from kafka.errors import KafkaError, TopicAlreadyExistsError

from core.credentials import Credential, from_environment
from services.kafka.clients import connect_error, sasl_options

log = logging.getLogger("serving")

TICK_S = 0.05  # between looks at stdin when nothing arrives: acknowledgements are counted this often
RETRY_S = 5.0  # between attempts to reach a broker that did not answer
CONNECT_TIMEOUT_S = 2.0  # one attempt to reach it
DELIVERY_TIMEOUT_S = 30.0  # a message the broker has not acknowledged by then is dropped
READ_BYTES = 1 << 20


def connect(
    topic: str, bootstrap: str, credential: Credential | None = None
) -> tuple[KafkaProducer | None, list[int], str]:
    """A producer and the topic's partitions, the topic created if missing (the embedded broker creates
    none by itself); (None, [], why) when the broker does not answer, does not accept the credential, or
    refuses the user the topic."""
    login = sasl_options(credential)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="btcflow-gateway-log",
            bootstrap_timeout_ms=int(CONNECT_TIMEOUT_S * 1000),
            request_timeout_ms=int(CONNECT_TIMEOUT_S * 1000),
            **login,
        )
    except KafkaError as exc:
        return None, [], str(connect_error(bootstrap, exc, credential))
    try:
        try:
            if topic not in admin.list_topics():
                brokers = len(admin.describe_cluster()["brokers"]) or 1
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics({topic: {"num_partitions": 1, "replication_factor": min(3, brokers)}})
        finally:
            admin.close()
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
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
            **login,
        )
    except KafkaError as exc:
        return None, [], f"Kafka at {bootstrap}: {exc}"
    try:
        return producer, sorted(producer.partitions_for(topic)), ""
    except KafkaError as exc:
        with contextlib.suppress(KafkaError):
            producer.close(timeout=0)
        return None, [], f"Kafka at {bootstrap}: {exc}"


class Publisher:
    """Sends lines to the topic, counting what the broker acknowledged and what it never will."""

    def __init__(
        self, topic: str, bootstrap: str, capacity: int, credential: Credential | None = None
    ) -> None:
        self.topic, self.bootstrap, self.capacity = topic, bootstrap, capacity
        self.credential = credential
        self.sent = self.dropped = 0
        self.producer: KafkaProducer | None = None
        self.partitions: list[int] = []
        self.in_flight: deque[Any] = deque()  # the producer's futures, oldest first
        self.retry_at = 0.0
        self.down = False

    def publish(self, lines: list[bytes]) -> None:
        if self.producer is None and time.monotonic() >= self.retry_at:
            self.producer, self.partitions, why = connect(self.topic, self.bootstrap, self.credential)
            if self.producer is None:
                self.retry_at = time.monotonic() + RETRY_S
                if not self.down:
                    log.warning("%s; dropping predictions, trying again every %.0fs", why, RETRY_S)
                self.down = True
            elif self.down:
                log.warning("Kafka at %s reachable again", self.bootstrap)
                self.down = False
        room = self.capacity - len(self.in_flight)
        if self.producer is None or room <= 0:
            self.dropped += len(lines)
            return
        self.dropped += max(0, len(lines) - room)
        self.partitions.append(self.partitions.pop(0))  # each read's messages to the next partition
        send, in_flight, topic, partition = self.producer.send, self.in_flight, self.topic, self.partitions[0]
        for i, line in enumerate(lines[:room]):
            try:  # naming the partition skips kafka-python's partitioner, a tenth of `send`
                in_flight.append(send(topic, line, partition=partition))
            except KafkaError:  # no metadata within max_block_ms: the broker went away
                self.dropped += min(len(lines), room) - i
                break

    def settle(self) -> None:
        """Count the messages the broker acknowledged (sent) or that failed (dropped), oldest first."""
        in_flight = self.in_flight
        while in_flight and in_flight[0].is_done:
            if in_flight.popleft().succeeded():
                self.sent += 1
            else:
                self.dropped += 1

    def close(self, timeout_s: float) -> None:
        """Flush within `timeout_s`; what the broker has not taken by then fails (counted as dropped).

        kafka-python's `close` flushes first and raises when that times out, leaving the producer open:
        its sender thread is stopped without sending first, then `close` has nothing left to wait for.
        """
        producer = self.producer
        if producer is not None:
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
        self.settle()
        self.dropped += len(self.in_flight)  # neither acknowledged nor failed: not delivered
        self.in_flight.clear()


def main(argv: list[str]) -> int:
    topic, bootstrap, capacity, flush_s = argv[0], argv[1], int(argv[2]), float(argv[3])
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="btcflow prediction log: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # one line of ours per outage, not a dozen
    credential = from_environment("BTCFLOW_KAFKA_USERNAME", "BTCFLOW_KAFKA_PASSWORD")
    publisher = Publisher(topic, bootstrap, capacity, credential)
    stdin, out = sys.stdin.fileno(), sys.stdout
    reported = (0, 0)
    tail = b""
    while True:
        ready, _, _ = select.select([stdin], [], [], TICK_S)
        chunk = os.read(stdin, READ_BYTES) if ready else None
        if chunk:
            *lines, tail = (tail + chunk).split(b"\n")
            if lines:
                publisher.publish(lines)
        publisher.settle()
        if chunk == b"":  # the gateway closed its end: flush and go
            publisher.close(flush_s)
        if (publisher.sent, publisher.dropped) != reported:
            reported = (publisher.sent, publisher.dropped)
            out.write(f"{reported[0]} {reported[1]}\n")
            out.flush()
        if chunk == b"":
            return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
