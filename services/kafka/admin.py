"""Kafka's admin client, and what it tells of the cluster itself: which brokers take requests, which node
leads the KRaft quorum. The embedded cluster (services.kafka.cluster) waits on these; pipeline.broker's
topic calls use the same client."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from core.credentials import Credential
from core.errors import BrokerUnavailable
from services.kafka.clients import connect_error, sasl_options


def admin_client(
    bootstrap: str, timeout_s: float = 5.0, credential: Credential | None = None
) -> KafkaAdminClient:
    """An admin client logged in as `credential` (none: an open cluster), or BrokerUnavailable within
    about `timeout_s` seconds (BrokerAuthFailed when the cluster did not accept the credential)."""
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            client_id="btcflow-admin",
            **sasl_options(credential),
        )
    except KafkaError as exc:
        raise connect_error(bootstrap, exc, credential) from exc


def live_brokers(admin: KafkaAdminClient) -> list[int]:
    """Ids of the brokers the cluster reports as taking requests (registered and not fenced)."""
    brokers = admin.describe_cluster()["brokers"]
    return sorted(b["broker_id"] for b in brokers if not b.get("is_fenced", False))


def quorum_leader(bootstrap: str, credential: Credential | None = None) -> int | None:
    """Node id of the active controller (leader of the KRaft metadata quorum); None if none answers."""
    try:
        admin = admin_client(bootstrap, timeout_s=3.0, credential=credential)
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
