"""Fixtures shared by every test package: one real Kafka broker per test session, fresh names per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.broker import EmbeddedBroker, free_port_pair
from pipeline.settings import PipelineSettings

REPO = Path(__file__).resolve().parents[1]
KAGGLE_SAMPLE = REPO.parent / "shared" / "data" / "kaggle_head_10k.csv"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real single-node KRaft broker on a free port, started once per session; yields its address."""
    home = tmp_path_factory.mktemp("kafka")
    broker = EmbeddedBroker(home, PipelineSettings().kafka_jars, port=free_port_pair(), heap="512m")
    address = broker.start(timeout_s=120)
    yield address
    broker.stop()


@pytest.fixture
def topic() -> str:
    """A fresh topic name per test (the broker is shared by the session)."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(kafka_broker: str, topic: str, tmp_path: Path) -> PipelineSettings:
    """Pipeline settings pointing at the session broker, a fresh topic and a temporary data dir."""
    return PipelineSettings(kafka_bootstrap=kafka_broker, topic=topic, data_dir=tmp_path / "data")


@pytest.fixture
def kaggle_sample() -> Path:
    if not KAGGLE_SAMPLE.exists():
        pytest.skip(f"{KAGGLE_SAMPLE} not found (it comes with shared/)")
    return KAGGLE_SAMPLE
