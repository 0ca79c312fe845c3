"""Kafka's admin client, and what it tells of the cluster itself: which brokers take requests, which node
leads the KRaft quorum. The embedded cluster (services.kafka.cluster) waits on these; pipeline.broker's
topic calls use the same client."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from core.errors import BrokerUnavailable


def admin_client(bootstrap: str, timeout_s: float = 5.0) -> KafkaAdminClient:
    """An admin client, or BrokerUnavailable within about `timeout_s` seconds."""
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            client_id="btcflow-admin",
        )
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka not reachable at {bootstrap} ({type(exc).__name__})") from exc


def live_brokers(admin: KafkaAdminClient) -> list[int]:
    """Ids of the brokers the cluster reports as taking requests (registered and not fenced)."""
    brokers = admin.describe_cluster()["brokers"]
    return sorted(b["broker_id"] for b in brokers if not b.get("is_fenced", False))


def quorum_leader(bootstrap: str) -> int | None:
    """Node id of the active controller (leader of the KRaft metadata quorum); None if none answers."""
    try:
        admin = admin_client(bootstrap, timeout_s=3.0)
    except BrokerUnavailable:
        return None
    try:
        quorum = admin.describe_metadata_quorum()
        leader = int(quorum["topics"][0]["partitions"][0]["leader_id"])
        return leader if leader >= 0 else None
    except (KafkaError, LookupError):
        return None
    finally:
        admin.close()
