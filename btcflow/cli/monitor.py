"""`btcflow monitor`: parse options, read settings once, call monitoring.monitor (imported in the command)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from monitoring import defaults


def monitor(
    topic: Annotated[str | None, typer.Option(help="Topic to read (default: $BTCFLOW_TOPIC).")] = None,
    group: Annotated[
        str | None,
        typer.Option(help=f"Consumer group (default: $BTCFLOW_MONITOR_GROUP, {defaults.GROUP})."),
    ] = None,
    max_minutes: Annotated[
        int | None, typer.Option(min=1, help="Stop after scoring this many minutes (rows).")
    ] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(min=0.001, help="Stop when no message came for this many seconds.")
    ] = None,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning",
            help="Read the topic from its beginning instead of the group's committed offsets (a new "
            "group otherwise starts at the end: live minutes only).",
        ),
    ] = False,
    challengers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Newest versions above Production scored beside it in shadow, per model "
            f"(default: $BTCFLOW_MONITOR_CHALLENGERS, {defaults.CHALLENGERS}).",
        ),
    ] = None,
    windows: Annotated[
        str | None,
        typer.Option(
            help="Rolling windows in minutes of event time, comma-separated; the first one judges "
            f"(default: $BTCFLOW_MONITOR_WINDOWS, {','.join(map(str, defaults.WINDOWS))}).",
        ),
    ] = None,
    min_minutes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Minutes both sides must have scored in the first window before a verdict "
            f"(default: $BTCFLOW_MONITOR_MIN_MINUTES, {defaults.MIN_MINUTES}).",
        ),
    ] = None,
    hold_minutes: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Minutes of event time a changed verdict must hold before it is printed (and, with "
            "--promote, handed to the gate) "
            f"(default: $BTCFLOW_MONITOR_HOLD_MINUTES, {defaults.HOLD_MINUTES}).",
        ),
    ] = None,
    refresh: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Seconds between looks at the registry for a new Production or challenger "
            f"(default: $BTCFLOW_MONITOR_REFRESH_S, {defaults.REFRESH_S:g}).",
        ),
    ] = None,
    log_interval: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Least seconds between two logs of live metrics to MLflow; once more at stop "
            f"(default: $BTCFLOW_MONITOR_LOG_INTERVAL_S, {defaults.LOG_INTERVAL_S:g}).",
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(
            help=f"Address of the Prometheus /metrics (default: $BTCFLOW_MONITOR_HOST, {defaults.HOST})."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Port of /metrics; 0 picks a free one, printed at start "
            f"(default: $BTCFLOW_MONITOR_PORT, {defaults.PORT}).",
        ),
    ] = None,
    promote: Annotated[
        bool,
        typer.Option(
            "--promote",
            help="When a challenger starts beating Production live, hand the model to the promotion gate "
            "(btcflow promote --best --require-baseline: scored on the batch files with Spark, in a child "
            "process; monitoring goes on meanwhile).",
        ),
    ] = False,
) -> None:
    """Score the stream live (help: HELP below)."""
    import time

    from pydantic import ValidationError

    from core.errors import BadInput
    from core.secrets import mask_uri
    from monitoring.settings import MonitorSettings
    from pipeline.settings import PipelineSettings
    from training.settings import TrainingSettings
    from training.tracking import runs_link

    overrides: dict[str, Any] = {
        "group": group,
        "challengers": challengers,
        "windows": windows,
        "min_minutes": min_minutes,
        "hold_minutes": hold_minutes,
        "refresh_s": refresh,
        "log_interval_s": log_interval,
        "host": metrics_host,
        "port": metrics_port,
    }
    try:
        settings = MonitorSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        raise BadInput(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    pipeline = PipelineSettings()
    if topic:
        pipeline = pipeline.model_copy(update={"topic": topic})
    training = TrainingSettings()
    # trainer even without --promote: the monitor writes its monitor-* runs and tags the versions it scores
    from btcflow.cli.tracking import as_role

    as_role(training.tracking_uri, "trainer")
    if not promote:  # the scoring path is the gateway's numpy engine: no JVM, not even via mlflow's imports
        from serving.evaluate import forbid_jvm_imports

        forbid_jvm_imports()
    from monitoring.monitor import monitor as run_monitor
    from monitoring.promotion import Gates

    def report(line: str) -> None:
        typer.echo(f"{time.strftime('%H:%M:%S')} {mask_uri(line)}")  # a gate's failure may name the store

    summary = run_monitor(
        pipeline,
        training,
        settings,
        max_minutes=max_minutes,
        idle_timeout_s=idle_timeout,
        from_beginning=from_beginning,
        gates=Gates(training) if promote else None,
        report=report,
    )
    typer.echo(summary.line())
    if summary.rows:
        print_table(summary.rows)
    typer.echo(
        f"live metrics in MLflow (runs monitor-*): {runs_link(training.tracking_uri, training.experiment)}"
    )


def print_table(rows: list[dict]) -> None:
    """Per version and window: role, minutes scored, the live primary metric and its baseline's."""
    from rich.table import Table

    from btcflow.cli.output import console

    table = Table("model", "version", "role", "window", "minutes", "metric", "live", "baseline")
    for row in rows:
        figures = ["-" if row[k] is None else f"{row[k]:.4g}" for k in ("value", "baseline")]
        table.add_row(
            *(str(row[k]) for k in ("model", "version", "role", "window", "minutes", "metric")), *figures
        )
    console().print(table)


HELP = (
    "Score each minute of the stream with every model's Production version and its newest challengers "
    "(shadow), with the gateway's numpy engine."
    "\n\nThe truth comes with the stream: a minute's own Close (close), its High and Low (high_low), the "
    "next minute's Close (trend: up or down). Each version gets rolling windows of live metrics beside a "
    "naive baseline on the same minutes: for close the previous minute's Close, for high_low Open as both "
    "High and Low, for trend persistence (the previous minute's direction)."
    "\n\nThe figures go to MLflow (experiment btcflow, one run monitor-<model>-v<version> per version, "
    "metrics live_<W>m/<metric>, one point per scored minute: step = Timestamp // 60) and to Prometheus "
    "on /metrics. One line is printed "
    "when a challenger starts or stops beating Production in the first window, and when Production falls "
    "below its baseline or comes back. Runs until Ctrl-C or SIGTERM unless --max-minutes or --idle-timeout "
    "ends it, then prints a summary line and a table per version and window."
)


def register(app: typer.Typer) -> None:
    """Add `monitor` to the root app."""
    app.command("monitor", help=HELP)(monitor)
