"""`btcflow data synth` and `btcflow produce`: the input file and its replay into Kafka."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from btcflow.cli.groups import group
from pipeline import defaults

data_app = group(help="Input data: generate a Kaggle-shaped Bitcoin minute file.")


@data_app.command("synth")
def synth(
    rows: Annotated[int, typer.Option("--rows", min=0, help="Data rows to write (the header comes on top).")],
    out: Annotated[Path, typer.Option("--out", help="CSV file to write (its folder is created).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same bytes.")] = 0,
    start_price: Annotated[
        float,
        typer.Option(
            "--start-price",
            help="Price of the first minute (USD); the path grows from there. 4.58 as the real file in "
            "2012; e.g. 115000 for minutes like 2025's.",
        ),
    ] = 4.58,
    eras: Annotated[
        bool,
        typer.Option(
            "--eras/--no-eras",
            help="Follow the real file's bull and bear eras, $4.58 in 2012 to six figures in 2025 (7M rows); "
            "--no-eras: a slow exponential trend instead.",
        ),
    ] = True,
    bad_prints: Annotated[
        float,
        typer.Option(
            "--bad-prints",
            min=0.0,
            max=1.0,
            help="Share of traded minutes with a print far off the market (a Low at cents, a High at several "
            "times the price, or the whole minute there), as early exchanges printed them. 0: none.",
        ),
    ] = defaults.BAD_PRINT_RATE,
    long_gaps: Annotated[
        float,
        typer.Option(
            "--long-gaps",
            min=0.0,
            max=1.0,
            help="Share of rows followed by an outage of 1 hour to 3 days without rows. 0: none.",
        ),
    ] = defaults.LONG_GAP_RATE,
    volume_shifts: Annotated[
        bool,
        typer.Option(
            "--volume-shifts/--no-volume-shifts",
            help="Step the volume's level up or down where the real file changes exchange.",
        ),
    ] = True,
) -> None:
    """Write a Kaggle-shaped CSV (Timestamp,Open,High,Low,Close,Volume), one row per minute from 2012.

    Same seed, same options: same bytes. Each feature of real minutes can be switched off on its own.
    """
    from pipeline.synth import Shape
    from pipeline.synth import synth as write

    shape = Shape(eras=eras, bad_prints=bad_prints, long_gaps=long_gaps, volume_shifts=volume_shifts)
    write(rows, out, seed, start_price, shape)
    typer.echo(f"wrote {rows:,} rows to {out}")


def produce(
    input: Annotated[
        Path, typer.Option("--input", help="CSV file to replay: generated, or the real Kaggle file.")
    ],
    topic: Annotated[
        str | None,
        typer.Option("--topic", help=f"Topic to write (default: BTCFLOW_TOPIC, {defaults.TOPIC})."),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option("--rate", min=0.001, help="Hold a steady ROWS_PER_S (default: as fast as possible)."),
    ] = None,
    jitter: Annotated[
        str | None,
        typer.Option("--jitter", help="MIN_MS:MAX_MS: sleep a random time between rows, like a live feed."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, help="Stop after the first N rows of the file (sent, rejected or skipped)."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Producer processes, each sending a contiguous slice of the file to its own partition.",
        ),
    ] = 1,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Skip the rows the topic already holds (each partition's last Timestamp) and the bad "
            "rows already in <topic>.dlq, so a rerun after a crash, kill or exit 3 sends each row "
            "once. Use the --workers of the interrupted run.",
        ),
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show the progress bar on stderr.")
    ] = True,
    delivery_timeout: Annotated[
        float,
        typer.Option(
            "--delivery-timeout",
            min=1.0,
            hidden=True,  # Kafka's default is the right one; tests shorten it
            help="Seconds a row may wait for Kafka, retries included, before the run stops (exit 3).",
        ),
    ] = 120.0,
) -> None:
    """Replay a minute file into Kafka, one message per row; bad rows go to <topic>.dlq with their reason.

    Rows are durable (acks=all, idempotent) and ride out a broker restart or a leader failover of up to
    two minutes (Kafka's delivery timeout); past it the run stops with exit 3, and a rerun with --resume
    sends the rest. Prints one summary line at the end (also after Ctrl-C or SIGTERM): skipped (with
    --resume), sent, rejected, seconds, rows/s.
    """
    from pipeline.producer import Pacing, parse_jitter
    from pipeline.producer import produce as replay
    from pipeline.settings import PipelineSettings

    settings = PipelineSettings()
    if topic:
        settings = settings.model_copy(update={"topic": topic})
    pacing = Pacing(rate, parse_jitter(jitter) if jitter else None, limit)
    summary = replay(
        settings,
        input,
        pacing=pacing,
        workers=workers,
        progress=progress,
        resume=resume,
        deadline_s=delivery_timeout,
    )
    typer.echo(summary.line())


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(data_app, name="data")
    app.command("produce")(produce)
