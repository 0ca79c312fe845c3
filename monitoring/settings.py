"""Monitor settings, read once by the entry point (environment, prefix BTCFLOW_MONITOR_) and passed down.

Kafka and MLflow come from the pipeline's and training's own settings; these are the monitor's alone.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from monitoring import defaults


class MonitorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BTCFLOW_MONITOR_", extra="ignore")

    group: str = Field(
        defaults.GROUP,
        description="Consumer group of `btcflow monitor`, apart from the batcher's: it reads every "
        "minute without taking any from the batch files. A restart resumes at its committed offsets.",
    )
    host: str = Field(defaults.HOST, description="Address the monitor's Prometheus /metrics binds.")
    port: int = Field(
        defaults.PORT,
        ge=0,
        le=65535,
        description="Port of the monitor's /metrics; 0: a free port, printed at start.",
    )
    windows: Annotated[tuple[int, ...], NoDecode] = Field(
        defaults.WINDOWS,
        description="Rolling windows in minutes (comma-separated). Live metrics cover the last N minutes "
        "of event time; the first window is the one the champion/challenger verdicts use.",
    )
    challengers: int = Field(
        defaults.CHALLENGERS,
        ge=0,
        description="Newest versions above Production scored beside it, per model (shadow).",
    )
    min_minutes: int = Field(
        defaults.MIN_MINUTES,
        ge=1,
        description="Minutes both sides must have scored in the first window before a verdict.",
    )
    hold_minutes: int = Field(
        defaults.HOLD_MINUTES,
        ge=0,
        description="Minutes of event time a changed verdict must hold before it is said (and handed to "
        "the gate): a noisy window would otherwise flip back and forth.",
    )
    refresh_s: float = Field(
        defaults.REFRESH_S,
        gt=0,
        description="Seconds between looks at the registry for a new Production or challenger.",
    )
    log_interval_s: float = Field(
        defaults.LOG_INTERVAL_S,
        gt=0,
        description="Least seconds between two logs of live metrics to MLflow (once more at stop).",
    )

    @field_validator("windows", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return tuple(int(part) for part in value.replace(" ", "").split(",") if part)
            except ValueError:
                raise ValueError(f"windows are minutes like 60,1440, not {value!r}") from None
        return value

    @field_validator("windows")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(w < 1 for w in value):
            raise ValueError(f"windows must be whole minutes of 1 or more, not {value!r}")
        return tuple(dict.fromkeys(value))  # order kept (the first one judges), duplicates dropped
