"""`btcflow demo`: the whole flow on embedded defaults, from nothing to answered HTTP predictions.

Steps: generate a Kaggle-shaped file (or take --input), start the embedded broker, replay the file
through Kafka with the consumer writing batches side by side, train the three models cumulatively on
batches 1..3, promote with the --best gate on batch 4 (the held-out tail), then start the gateway,
call each route and stop it. Each step is the same library call its own command makes.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from btcflow.cli.output import console

if TYPE_CHECKING:
    from core.storage import Storage

TRAINED_BATCHES = 3  # cumulative 1, 1+2, 1+2+3; batch 4 (the tail) is the unseen promotion window
DEMO_KEY = "demo"  # the gateway API key the demo calls its own gateway with (stack only)
LIVE_MINUTES = 3_000  # the tail replayed for `btcflow monitor`: two days in a few seconds (batch 4 at most)


def _say(*objects: Any, **options: Any) -> None:
    """Print through rich (markup, tables), imported only once the demo runs."""
    console().print(*objects, **options)


_STEPS: list[tuple[str, float]] = []  # (step, when it began): the demo's last lines say where the time went


def _step(title: str, name: str = "") -> None:
    """A rule with the step's title; `name` (e.g. `ingest`) times it for the last lines."""
    console().rule(f"[bold]{title}")
    if name:
        _STEPS.append((name, time.monotonic()))


def _step_times(ended: float) -> str:
    """`generate 9.9 s · broker 1.2 s · ...`: each step's seconds, up to the next one's start."""
    ends = [when for _, when in _STEPS[1:]] + [ended]
    return " · ".join(f"{name} {end - began:.1f} s" for (name, began), end in zip(_STEPS, ends, strict=True))


def _ingest(rows: int, input_path: Path | None, batch_rows: int | None, seed: int) -> Path:
    from rich.table import Table

    from pipeline.broker import delete_topic
    from pipeline.producer import produce
    from pipeline.settings import PipelineSettings
    from pipeline.store import read_manifest
    from pipeline.synth import synth

    settings = PipelineSettings()
    source = input_path
    if source is None:
        source = settings.data_dir / f"synth_{rows}_seed{seed}.csv"
        if not source.exists():
            _step(f"1. generate {rows:,} Kaggle-shaped rows", "generate")
            started = time.monotonic()
            synth(rows, source, seed)
            _say(f"wrote {source} in {time.monotonic() - started:.1f} s")
    total = rows if input_path is None else _count_rows(source)
    size = batch_rows or math.ceil(total * 0.3)

    _step("2. Kafka broker", "broker")
    if settings.embedded:
        cluster = settings.embedded_cluster()
        _say(f"Kafka at {cluster.start()} ({cluster.nodes} node(s), logs in {cluster.home}/node-*/)")
    else:
        _say(f"using the cluster at {settings.bootstrap}")
    # The demo starts from nothing: an empty topic and no batches, so a rerun never doubles rows.
    delete_topic(settings.bootstrap, settings.topic, credential=settings.kafka_credential("admin"))
    settings.batch_storage().clear()

    _step(f"3. replay {source.name} through '{settings.topic}', batches of {size:,} rows", "ingest")
    # its summary line is read below; its stderr is ours, and it logs at our (exported) BTCFLOW_LOG_LEVEL
    consume = ["consume", "--batch-rows", str(size), "--idle-timeout", "8", "--no-progress"]
    consumer = subprocess.Popen(
        [sys.executable, "-m", "btcflow.cli", *consume],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"BTCFLOW_TOPIC": settings.topic},
    )
    try:
        summary = produce(settings, source, progress=sys.stderr.isatty())
        _say(f"producer: {summary.line()}")
        out, _ = consumer.communicate(timeout=600)
    finally:  # whatever happened to the producer, no consumer is left behind
        if consumer.poll() is None:
            consumer.terminate()
            consumer.wait(timeout=30)
    _say(f"consumer: {out.strip().splitlines()[-1] if out.strip() else 'no output'}")
    if consumer.returncode != 0:
        raise typer.Exit(consumer.returncode)

    table = Table("batch", "file", "rows", "first minute (UTC)", "last minute (UTC)", "offsets")
    entries = read_manifest(settings.batch_storage())
    for e in entries:
        table.add_row(
            str(e.batch),
            e.file,
            f"{e.rows:,}",
            _utc(e.min_ts),
            _utc(e.max_ts),
            ", ".join(f"p{p}: {a}-{b}" for p, (a, b) in e.offsets.items()),
        )
    _say(table)
    _say(f"manifest: {settings.batch_storage().location('manifest.json')}")
    if len(entries) <= TRAINED_BATCHES:
        raise typer.BadParameter(
            f"the demo needs more than {TRAINED_BATCHES} batches (got {len(entries)}): lower --batch-rows"
        )
    return source


def _count_rows(path: Path) -> int:
    with path.open("rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b"")) - 1


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def _train() -> None:
    from btcflow.cli.tracking import as_role
    from btcflow.cli.train import print_summary, spark_log_line
    from training.gate import promote_best
    from training.registry import stages
    from training.settings import TrainingSettings
    from training.specs import SPECS
    from training.tracking import runs_link
    from training.train import summary_rows, train_models

    settings = TrainingSettings()
    as_role(settings.tracking_uri, "trainer")  # on a tracking server btcflow runs: trains, promotes, monitors
    _step(f"4. train {', '.join(SPECS)} cumulatively on batches 1..{TRAINED_BATCHES}", "train")
    results = train_models(
        settings, list(SPECS), f"1-{TRAINED_BATCHES}", "cumulative", progress=sys.stderr.isatty()
    )
    _step(
        "5. promote with the champion/challenger gate (window: the batches after the last trained)",
        name="promote",
    )
    for name in SPECS:
        _say(promote_best(settings, name).message)
    print_summary(summary_rows(results, stages(settings, [(r.registered_name, r.version) for r in results])))
    _say(f"compare the runs in the MLflow UI: {runs_link(settings.tracking_uri, settings.experiment)}")
    if line := spark_log_line(settings.data_dir):
        _say(line)


def _serve(example: dict[str, float], workers: int, own_login: bool) -> None:
    """Start the gateway (as the tracking server's reader unless `own_login`: the user named one), call
    each route, stop it."""
    from serving.launch import call_routes, running_gateway
    from serving.settings import ServingSettings

    settings = ServingSettings()
    _step(f"6. the gateway ({workers} worker(s)), on a free port", "gateway")
    api_key = _demo_key(settings.api_keys_file) if settings.api_keys_file else None
    reader = contextlib.nullcontext() if own_login else _as_role(settings.tracking_uri, "reader")
    with reader, running_gateway(settings, port=0, workers=workers, api_key=api_key) as base:
        for curl, status, answer in call_routes(base, example, api_key):
            _say(f"{curl}\n  → {status} {answer}")
        _say(f"interactive docs: {base}/docs")
    _say("gateway stopped; `btcflow serve` runs it on http://127.0.0.1:8000 until Ctrl-C")


def _demo_key(path: Path) -> str:
    """A fresh API key named `demo` (the previous demo's revoked): the demo calls its own gateway with it."""
    from serving import keys

    with contextlib.suppress(keys.KeysError):  # no key named demo yet
        keys.revoke(path, DEMO_KEY)
    key = keys.create(path, DEMO_KEY)
    _say(f"API key '{DEMO_KEY}' made in {path} (hash only; the calls below send it as $BTCFLOW_API_KEY)")
    return key


@contextlib.contextmanager
def _as_role(tracking_uri: str, role: str) -> Iterator[None]:
    """Within the block, the processes this one starts call the tracking server as `role`'s kept
    credential (when its server is this data dir's); then as before."""
    from btcflow.cli.tracking import as_role
    from core.access import PASSWORD_VAR, USERNAME_VAR

    saved = {name: os.environ.pop(name, None) for name in (USERNAME_VAR, PASSWORD_VAR)}
    try:
        as_role(tracking_uri, role)
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def _tail(source: Path, rows: int, out: Path) -> Path:
    """The header and the last `rows` lines of `source`: minutes of the held-out batch, none trained on."""
    from collections import deque

    with source.open("rb") as f:
        header = f.readline()
        last = deque(f, maxlen=rows)
    out.write_bytes(header + b"".join(last))
    return out


def _monitor(source: Path, minutes: int) -> None:
    """Replay the file's last minutes into a topic of their own at 1,000 rows/s, scored live as they come."""
    import threading

    from btcflow.cli.monitor import print_table
    from monitoring.monitor import monitor
    from monitoring.settings import MonitorSettings
    from pipeline.broker import delete_topic
    from pipeline.defaults import live_topic
    from pipeline.producer import produce
    from pipeline.replay import Pacing
    from pipeline.settings import PipelineSettings
    from training.settings import TrainingSettings

    pipeline = PipelineSettings()
    live = pipeline.model_copy(update={"topic": live_topic(pipeline.topic)})
    _step(
        f"7. live scoring: the last {minutes:,} minutes again, into '{live.topic}', by btcflow monitor",
        name="monitor",
    )
    delete_topic(live.bootstrap, live.topic, credential=live.kafka_credential("admin"))
    tail = _tail(source, minutes, live.data_dir / "live_tail.csv")
    producer = threading.Thread(
        target=produce, args=(live, tail), kwargs={"pacing": Pacing(rate=1000.0), "progress": False}
    )
    producer.start()
    try:
        summary = monitor(
            live,
            TrainingSettings(),
            MonitorSettings(port=0, log_interval_s=0.25),  # a few seconds of stream: chart points often
            max_minutes=minutes,
            idle_timeout_s=30.0,
            from_beginning=True,
            report=_say,
        )
    finally:
        producer.join()
    _say(summary.line())
    print_table(summary.rows)
    _say(
        "the live metrics are in MLflow beside the training runs (runs monitor-*, charts by minute); "
        "`btcflow monitor` follows 'bitcoin-topic' live"
    )


def _last_row(storage: Storage) -> dict[str, float]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.store import read_manifest

    last = read_manifest(storage)[-1]
    data = storage.read(last.file)
    if last.file.endswith(".csv"):
        import pandas as pd

        return {k: float(v) for k, v in pd.read_csv(io.BytesIO(data)).iloc[-1].items()}
    table = pq.read_table(pa.BufferReader(data))
    return {name: float(table.column(name)[-1].as_py()) for name in table.column_names}


def demo(
    rows: Annotated[int, typer.Option(min=1000, help="Rows to generate (ignored with --input).")] = 300_000,
    input_path: Annotated[
        Path | None,
        typer.Option("--input", exists=True, dir_okay=False, help="Replay this CSV (e.g. the Kaggle file)."),
    ] = None,
    batch_rows: Annotated[
        int | None,
        typer.Option(min=1, help="Rows per batch (default: 30% of the file: three batches and a tail)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated file.")] = 7,
    stack: Annotated[
        bool,
        typer.Option(
            "--stack",
            help="Run against the whole stack (`btcflow stack up`, started here if needed): a 3-node Kafka "
            "cluster, training on the Spark standalone cluster, MLflow on its tracking server (PostgreSQL), "
            "a gateway of 2 workers. The stack keeps running afterwards: `btcflow stack down` stops it.",
        ),
    ] = False,
) -> None:
    """Run everything end to end: data, broker, produce + consume, train, promote, serve, predict, monitor."""
    from pipeline.settings import PipelineSettings
    from pipeline.store import read_manifest

    started = time.monotonic()
    _STEPS.clear()
    own_login = bool(os.environ.get("MLFLOW_TRACKING_USERNAME"))  # else each step uses its role's
    workers = 1
    if stack:
        from btcflow.cli.stack import up

        _step("0. the stack: Kafka cluster, Spark cluster, MLflow tracking server", "stack")
        _say(up(), markup=False, highlight=False)
        workers = 2
    source = _ingest(rows, input_path, batch_rows, seed)
    _train()
    storage = PipelineSettings().batch_storage()
    _serve(_last_row(storage), workers, own_login)
    held_out = read_manifest(storage)[-1].rows
    _monitor(source, min(LIVE_MINUTES, held_out))
    if stack:
        _say(
            "the stack keeps running (`btcflow stack status`, `btcflow stack down`); `btcflow stack up` "
            "prints the exports that point btcflow's commands at it"
        )
    ended = time.monotonic()
    steps = _step_times(ended)
    _step(f"done in {ended - started:.0f} s")
    _say(f"step times: {steps}", markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `demo` to the root app."""
    app.command("demo")(demo)
