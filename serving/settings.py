"""Gateway settings, read once by the entry point (environment, prefix BTCFLOW_) and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.credentials import Credential
from core.tracking import default_tracking_uri

BYTES_PER_ROW = 256  # what max_body_bytes allows per row when unset


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
        None,
        description="Bearer token for POST /admin/reload. With api_keys_file the route takes any API key, "
        "and this token too when set (its older form). Unset, and no keys: the route does not exist.",
    )
    api_keys_file: Path | None = Field(
        None,
        description="The keys file `btcflow keys create` writes (names, salted HMAC-SHA256 hashes; never a "
        "key). Set: every route but /health, /ready, the docs and the MLflow webhook needs "
        "`Authorization: Bearer <key>` (401 otherwise), and a key revoked in the file is refused within "
        "poll_interval_s by every worker. Unset: the gateway is open.",
    )
    open_metrics: bool = Field(
        False,
        description="With api_keys_file: true leaves GET /metrics and GET /models open (a Prometheus "
        "scraper without a key); false needs a key for them too. No effect on an open gateway.",
    )
    data_dir: Path = Field(
        Path("data"),
        description="BTCFLOW_DATA_DIR: `btcflow keys` keeps its file in <data_dir>/gateway/api-keys.json "
        "when api_keys_file is unset.",
    )
    max_rows: int = Field(10_000, ge=1, description="Most rows one POST may carry (more: 422).")
    max_body_bytes: int | None = Field(
        None,
        ge=1,
        description="Largest request body the gateway reads: a larger one is answered 413 before it is "
        f"parsed (its Content-Length, or its bytes as they stream in). Unset: {BYTES_PER_ROW} bytes per "
        "row of max_rows (2,560,000 at 10,000 rows), room for the widest row, a trend row of 24-character "
        "JSON numbers (~100 bytes, ~130 indented).",
    )
    host: str = Field("127.0.0.1", description="Address `btcflow serve` binds by default.")
    port: int = Field(8000, ge=1, le=65535, description="Port `btcflow serve` listens on by default.")
    workers: int = Field(
        1,
        ge=1,
        description="Gateway processes `btcflow serve` runs on one port, each following the registry "
        "itself. 1 serves in the command's own process (the fastest path for one core).",
    )
    run_dir: Path | None = Field(
        None,
        description="Set by `btcflow serve` for its workers, not by users: the folder they share, where "
        "the worker that receives a webhook signals the others.",
    )
    webhooks: Literal["auto", "off"] = Field(
        "auto",
        description="auto: with an http(s) tracking URI, `btcflow serve` registers an MLflow webhook "
        "(alias created/deleted) pointing at its POST /webhooks/mlflow, so promotions swap at once; "
        "polling stays the fallback. off: polling only, no route.",
    )
    webhook_secret: str | None = Field(
        None,
        description="HMAC secret of that webhook. Unset: `btcflow serve` generates one per start and "
        "passes it to its workers.",
    )
    webhook_url: str | None = Field(
        None,
        description="The URL the MLflow server calls. Unset: http://<host>:<port>/webhooks/mlflow (set "
        "it when binding 0.0.0.0 or behind a proxy).",
    )
    webhook_tolerance_s: float = Field(
        300.0,
        gt=0,
        description="Deliveries whose signed timestamp is further than this from now are refused (401): "
        "a captured delivery cannot be replayed later.",
    )
    metrics: bool = Field(
        True,
        description="true: GET /metrics answers Prometheus text (requests, errors and "
        "latency per route, predictions per model version, the prediction log's counts), summed over the "
        "workers. false: no counting on the request path and no route (a reference for bench/serve.py).",
    )
    prediction_topic: str | None = Field(
        None,
        description="Set: every answered prediction (a GET, each row of a POST) "
        "goes to this Kafka topic as one JSON message (time, model name/version/run_id, inputs, outputs), "
        "created if missing. Each worker queues them and a publisher process of its own sends them: a "
        "request never waits for Kafka; when the queue is full or the broker is down the rows are dropped "
        "and counted in /metrics. Unset: no log.",
    )
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092",
        description="Kafka brokers the prediction log writes to (BTCFLOW_KAFKA_BOOTSTRAP, the variable the "
        "pipeline reads). Unset: the embedded broker's default address.",
    )
    kafka_username: str | None = Field(
        None,
        description="The Kafka user the prediction log logs in as (SASL/SCRAM-SHA-512), with "
        "BTCFLOW_KAFKA_PASSWORD: the variables the pipeline reads. Unset: `btcflow serve` uses the kept "
        "`gateway` credential of an embedded cluster that requires authentication; else no login.",
    )
    kafka_password: SecretStr | None = Field(None, description="Its password (never shown).")
    prediction_queue: int = Field(
        10_000,
        ge=1,
        description="Most predictions (rows) waiting in a worker's queue for the prediction log; as many "
        "more may wait for the publisher's pipe, and as many again for the broker's acknowledgement. "
        "Beyond, rows are dropped and counted.",
    )

    @property
    def kafka_credential(self) -> Credential | None:
        """Who the prediction log logs in as; None without BTCFLOW_KAFKA_USERNAME (an open cluster)."""
        if not self.kafka_username or self.kafka_password is None:
            return None
        return Credential(self.kafka_username, self.kafka_password.get_secret_value())

    @property
    def body_limit(self) -> int:
        """The largest request body read: max_body_bytes, else room for max_rows of the widest row."""
        return self.max_body_bytes if self.max_body_bytes is not None else self.max_rows * BYTES_PER_ROW

    @property
    def keys_file(self) -> Path:
        """Where `btcflow keys` reads and writes: api_keys_file, else <data_dir>/gateway/api-keys.json."""
        return self.api_keys_file or self.data_dir / "gateway" / "api-keys.json"
