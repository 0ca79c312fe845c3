"""How rows reach Kafka: the producer's settings, one delivery deadline for every wait, flush and close.

The deadline is Kafka's own `delivery.timeout.ms` (120 s by default): kafka-python retries a batch
(broker restart, leader failover) until then and fails it after. Everything else that waits here is
derived from it, so the first thing to give up is always kafka-python, with its own reason.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError, UnknownError

from core.credentials import Credential
from core.errors import AccessRefused
from pipeline.records import compression
from services.kafka.clients import connect_error, sasl_options, who

DELIVERY_TIMEOUT_S = 120.0  # Kafka's default delivery.timeout.ms
REQUEST_TIMEOUT_S = 30.0  # Kafka's default request.timeout.ms
MAX_BLOCK_S = 60.0  # Kafka's default max.block.ms (metadata waits)
LINGER_MS = 20
FLUSH_ROUND_S = 1.0
MAX_UNACKED_SENDS = 100_000  # rows `send` may hold unacknowledged (kafka-python 3 never blocks on memory)


def backstop(deadline_s: float) -> float:
    """How long our own waits last: past the deadline, by which kafka-python fails what it holds."""
    return deadline_s + min(REQUEST_TIMEOUT_S, deadline_s / 2) + 5.0


def kafka_producer(
    bootstrap: str, deadline_s: float = DELIVERY_TIMEOUT_S, credential: Credential | None = None
) -> KafkaProducer:
    """The producer every replay uses: durable (acks=all, idempotent) and batched for speed.

    Retries are unbounded and the delivery timeout bounds them, as in Kafka's Java client; the
    reconnect backoff stops at Kafka's 1 s rather than kafka-python's 30 s, so a restarted broker is
    found again within a second. kafka-python 3 turns idempotence on by default; it is set explicitly
    here, and with it one batch per partition is in flight, so a partition holds a prefix of what was
    sent to it. Compression (see `records.compression`) beats none: kafka-python's CRC32C is pure
    Python unless the `crc32c` package is installed, and it walks the compressed bytes.
    """
    deadline_ms = int(deadline_s * 1000)
    try:
        return KafkaProducer(
            bootstrap_servers=bootstrap,
            client_id="btcflow-producer",
            acks="all",
            enable_idempotence=True,
            delivery_timeout_ms=deadline_ms,
            request_timeout_ms=min(int(REQUEST_TIMEOUT_S * 1000), (deadline_ms - LINGER_MS) // 2),
            max_block_ms=min(int(MAX_BLOCK_S * 1000), deadline_ms),
            reconnect_backoff_max_ms=1_000,
            linger_ms=LINGER_MS,
            batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
            compression_type=compression(),
            bootstrap_timeout_ms=5_000,
            **sasl_options(credential),
        )
    except KafkaError as exc:
        raise connect_error(bootstrap, exc, credential) from exc


class SendWindow:
    """Backpressure for `KafkaProducer.send`: at most `rows` unacknowledged, waiting for the oldest.

    `get` raises the oldest's failure at once, so the send path also stops within a batch of one.
    """

    def __init__(self, wait_s: float, rows: int = MAX_UNACKED_SENDS) -> None:
        self.wait_s = wait_s
        self.rows = rows
        self._futures: deque[Any] = deque()

    def add(self, future: Any) -> None:
        futures = self._futures
        futures.append(future)
        while futures and (futures[0].is_done or len(futures) > self.rows):
            futures.popleft().get(timeout=self.wait_s)


def flush(producer: KafkaProducer, timeout_s: float) -> None:
    """`producer.flush` in short rounds until nothing is left, or `timeout_s` passes.

    kafka-python 3.0.12's flush waits, batch by batch, on the batches it saw when it started. A batch
    split for MESSAGE_TOO_LARGE never completes (its records move to the halves): flush raises
    UnknownError('Future not done'), or, for a half made only of bulk records, waits out its whole
    timeout. Each round sees the current batches, so the halves are waited for instead.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            producer.flush(timeout=min(FLUSH_ROUND_S, max(0.0, deadline - time.monotonic())))
            return
        except (UnknownError, KafkaTimeoutError):
            if time.monotonic() >= deadline:
                raise KafkaTimeoutError(
                    f"rows still unacknowledged {timeout_s:.0f} s after the last was sent"
                ) from None


def close(producer: KafkaProducer, abandon: bool, timeout_s: float = 10.0) -> None:
    """Close the producer for good, so neither `__del__` nor interpreter exit touches it again.

    kafka-python's `close` flushes first and raises when the flush times out, leaving the producer
    open (its `__del__` then fails the same way, with a traceback). After a failure (`abandon`), the
    sender thread is stopped without sending (it fails what it still holds), then `close` has nothing
    left to flush.
    """
    if not abandon:
        with contextlib.suppress(KafkaError):
            producer.close(timeout=timeout_s)
            return
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
        sender.join(timeout_s)
    with contextlib.suppress(KafkaError):
        producer.close(timeout=0)


def refusal(
    bootstrap: str, topic: str, error: BaseException, credential: Credential | None
) -> AccessRefused | None:
    """The failure of a user whose role may not write `topic`, else None. An idempotent producer with
    no WRITE anywhere is refused its producer id first (ClusterAuthorizationFailed, which kafka-python
    reports as a plain KafkaError naming it); with WRITE elsewhere, the topic (TopicAuthorizationFailed)."""
    text = f"{type(error).__name__} {error}"
    for kind in ("TopicAuthorizationFailed", "ClusterAuthorizationFailed"):
        if kind in text:
            what = f"{who(credential)} writing to {topic}"
            return AccessRefused(f"Kafka at {bootstrap} refused {what} ({kind})")
    return None


def failure_line(bootstrap: str, error: BaseException, deadline_s: float) -> str:
    """The one line a run ends with when Kafka did not take every row."""
    name = type(error).__name__
    text = str(error).strip().splitlines()[0][:200] if str(error).strip() else name
    why = text if text.startswith(name) else f"{name}: {text}"  # KafkaError's str names its class
    within = f" within {deadline_s:.0f} s" if isinstance(error, KafkaTimeoutError) else ""
    return (
        f"Kafka at {bootstrap} did not take every row{within} ({why}); "
        "rerun with --resume to send only the rows it does not have"
    )
