"""The Kafka admin calls btcflow needs: topics with the replication the cluster allows, leaders, the quorum.

The embedded cluster itself lives in `pipeline.cluster` (nodes) and `pipeline.launcher` (jars, Java,
ports, pid files); their names stay importable from here (`from pipeline.broker import EmbeddedBroker,
setup_jars, ...`) for the code written before them.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import TYPE_CHECKING, Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.errors import BrokerUnavailable

if TYPE_CHECKING:
    from pipeline.cluster import EmbeddedBroker, EmbeddedCluster
    from pipeline.launcher import find_java, free_port_block, free_port_pair, setup_jars

__all__ = [
    "EmbeddedBroker",
    "EmbeddedCluster",
    "admin_client",
    "delete_topic",
    "ensure_topic",
    "find_java",
    "free_port_block",
    "free_port_pair",
    "live_brokers",
    "partition_leader",
    "quorum_leader",
    "setup_jars",
    "topic_config",
]

log = logging.getLogger("pipeline")

_MOVED = {
    "EmbeddedBroker": "cluster",
    "EmbeddedCluster": "cluster",
    "_cluster_id": "cluster",
    "find_java": "launcher",
    "free_port_block": "launcher",
    "free_port_pair": "launcher",
    "setup_jars": "launcher",
}


def __getattr__(name: str) -> Any:
    """The launcher's names, imported on first use (`pipeline.cluster` itself imports this module)."""
    if name in _MOVED:
        module = importlib.import_module(f"pipeline.{_MOVED[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def ensure_topic(bootstrap: str, topic: str, partitions: int = 1) -> int:
    """Create `topic` if missing; return its partition count (an existing topic keeps its own).

    A new topic gets min(3, live brokers) replicas and, with 3, `min.insync.replicas=2`: with the
    producer's acks=all a write then survives the loss of any one node, and writes go on without it.
    """
    admin = admin_client(bootstrap)
    try:
        try:
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
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {bootstrap} refused the topic {topic}: {exc}") from exc
    finally:
        admin.close()


def partition_leader(bootstrap: str, topic: str, partition: int = 0, timeout_s: float = 30.0) -> int:
    """Node id of the partition's current leader, waiting up to `timeout_s` while it has none.

    Right after a node dies the metadata may still name it, and the node asked may be the dead one:
    each attempt opens a fresh client, so another node answers the next.
    """
    deadline = time.monotonic() + timeout_s
    problem = "no leader"
    while True:
        try:
            admin = admin_client(bootstrap)
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


def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    """The topic's own settings (those that differ from the broker's defaults)."""
    admin = admin_client(bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = described["topic"][topic]
        return {name: str(entry["value"]) for name, entry in entries.items()}
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {bootstrap} could not describe {topic}'s config: {exc}") from exc
    finally:
        admin.close()


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


def delete_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> bool:
    """Delete `topic` if it exists and wait until the broker forgets it; False if there was none."""
    admin = admin_client(bootstrap)
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
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {bootstrap} refused to delete {topic}: {exc}") from exc
    finally:
        admin.close()
