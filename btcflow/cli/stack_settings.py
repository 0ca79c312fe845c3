"""The stack's own settings (environment, prefix BTCFLOW_STACK_), apart from `btcflow/cli/stack.py` so
that its commands' help needs no pydantic-settings; the defaults are services.defaults' constants, which
stack.py's help shows."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.defaults import (
    STACK_BROKER_PORT,
    STACK_DATANODES,
    STACK_DIR,
    STACK_NODES,
    STACK_SPARK_WORKERS,
)


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BTCFLOW_STACK_", extra="ignore")

    dir: Path = Field(
        STACK_DIR,
        description="The stack's data dir (the BTCFLOW_DATA_DIR of every command pointed at it): Kafka, "
        "Spark, PostgreSQL, MLflow artifacts and the batches, apart from the embedded defaults' data/.",
    )
    broker_port: int = Field(
        STACK_BROKER_PORT,
        description="Client port of the stack's Kafka node 1 (node i: + 2(i-1)), clear of 9092.",
    )
    nodes: int = Field(STACK_NODES, ge=1, description="Kafka nodes `stack up` starts (its --nodes).")
    spark_workers: int = Field(
        STACK_SPARK_WORKERS, ge=1, description="Spark standalone workers (its --spark-workers)."
    )
    datanodes: int = Field(STACK_DATANODES, ge=1, description="HDFS DataNodes (its --datanodes).")
