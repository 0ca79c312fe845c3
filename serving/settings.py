"""Gateway settings, read once by the entry point (environment, prefix BTCFLOW_) and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_tracking_uri() -> str:
    """The embedded store of models.md: SQLite file `mlruns/mlflow.db` under the working directory."""
    return f"sqlite:///{Path('mlruns').resolve() / 'mlflow.db'}"


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BTCFLOW_", extra="ignore", populate_by_name=True)

    tracking_uri: str = Field(
        default_factory=default_tracking_uri,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "tracking_uri"),
        description="MLflow tracking and registry store (MLflow's own variable, no prefix). Unset: "
        "sqlite:///<cwd>/mlruns/mlflow.db, the store training writes by default.",
    )
    serving_engine: Literal["numpy", "spark"] = Field(
        "numpy",
        description="numpy: read the Spark models' files and evaluate them in-process, no JVM. "
        "spark: load them with MLflow's Spark flavour (needs Java; one Spark job per request).",
    )
    poll_interval_s: float = Field(
        10.0, gt=0, description="Seconds between registry checks for a new Production version."
    )
    admin_token: str | None = Field(
        None, description="Bearer token for POST /admin/reload. Unset: the route does not exist."
    )
    max_rows: int = Field(10_000, ge=1, description="Most rows one POST may carry (more: 422).")
    host: str = Field("127.0.0.1", description="Address `btcflow serve` binds by default.")
    port: int = Field(8000, ge=1, le=65535, description="Port `btcflow serve` listens on by default.")
