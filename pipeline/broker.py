"""The topic calls btcflow makes: topics with the replication the cluster allows, partition leaders,
their settings, their deletion. The cluster itself is services.kafka's.

Each call logs in as `credential` when the cluster requires authentication; a role refused what it
asked for (no ACL) is AccessRefused, exit 2, naming the user and the topic."""

from __future__ import annotations

import logging
import time

from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import AuthorizationError, KafkaError, TopicAlreadyExistsError

from core.credentials import Credential
from core.errors import BrokerUnavailable
from services.kafka.admin import admin_client, live_brokers
from services.kafka.clients import refused

log = logging.getLogger("pipeline")


def ensure_topic(
    bootstrap: str, topic: str, partitions: int = 1, credential: Credential | None = None
) -> int:
    """Create `topic` if missing; return its partition count (an existing topic keeps its own).

    A new topic gets min(3, live brokers) replicas and, with 3, `min.insync.replicas=2`: with the
    producer's acks=all a write then survives the loss of any one node, and writes go on without it.
    An existing topic is not created again, so a role needs CREATE only for a topic that is missing.
    """
    admin = admin_client(bootstrap, credential=credential)
    try:
        try:
            if topic not in admin.list_topics():  # those the user may see (DESCRIBE)
                rf = min(3, len(live_brokers(admin)) or 1)
                configs = {"min.insync.replicas": "2"} if rf >= 3 else {}
                spec = {"num_partitions": partitions, "replication_factor": rf, "configs": configs}
                admin.create_topics({topic: spec})
                log.info("created topic %s: %d partition(s), %d replica(s)", topic, partitions, rf)
        except TopicAlreadyExistsError:
            pass
        for _ in range(50):  # metadata can lag a fresh topic by a few milliseconds
            described = admin.describe_topics([topic])
            if described and described[0].get("partitions"):
                return len(described[0]["partitions"])
            time.sleep(0.1)
        raise BrokerUnavailable(f"topic {topic} was created but never showed up in the metadata")
    except AuthorizationError as exc:
        raise refused(bootstrap, exc, credential, f"the topic {topic}") from exc
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {bootstrap} refused the topic {topic}: {exc}") from exc
    finally:
        admin.close()


def partition_leader(
    bootstrap: str,
    topic: str,
    partition: int = 0,
    timeout_s: float = 30.0,
    credential: Credential | None = None,
) -> int:
    """Node id of the partition's current leader, waiting up to `timeout_s` while it has none.

    Right after a node dies the metadata may still name it, and the node asked may be the dead one:
    each attempt opens a fresh client, so another node answers the next.
    """
    deadline = time.monotonic() + timeout_s
    problem = "no leader"
    while True:
        try:
            admin = admin_client(bootstrap, credential=credential)
            try:
                for t in admin.describe_topics([topic]):
                    for p in t.get("partitions") or []:
                        if p["partition_index"] == partition and p["leader_id"] >= 0:
                            return int(p["leader_id"])
            finally:
                admin.close()
        except (KafkaError, BrokerUnavailable) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"{topic}-{partition} has no leader after {timeout_s:.0f} s ({problem})")
        time.sleep(0.2)


def topic_config(bootstrap: str, topic: str, credential: Credential | None = None) -> dict[str, str]:
    """The topic's own settings (those that differ from the broker's defaults)."""
    admin = admin_client(bootstrap, credential=credential)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = described["topic"][topic]
        return {name: str(entry["value"]) for name, entry in entries.items()}
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {bootstrap} could not describe {topic}'s config: {exc}") from exc
    finally:
        admin.close()


def delete_topic(
    bootstrap: str, topic: str, timeout_s: float = 30.0, credential: Credential | None = None
) -> bool:
    """Delete `topic` if it exists and wait until the broker forgets it; False if there was none."""
    admin = admin_client(bootstrap, credential=credential)
    try:
        if topic not in admin.list_topics():
            return False
        admin.delete_topics([topic])
        deadline = time.monotonic() + timeout_s
        while topic in admin.list_topics():
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"topic {topic} was not deleted within {timeout_s:.0f} s")
            time.sleep(0.2)
        return True
    except AuthorizationError as exc:
        raise refused(bootstrap, exc, credential, f"deleting {topic}") from exc
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {bootstrap} refused to delete {topic}: {exc}") from exc
    finally:
        admin.close()
