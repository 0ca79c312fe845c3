"""`btcflow consume`: Kafka topic → batch files by row count or time window (pipeline.consumer works)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.consumer import consume as run_consume
from pipeline.settings import PipelineSettings


class FileFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


def consume(
    out: Annotated[
        Path | None,
        typer.Option(help="Folder of the batch files and manifest.json (default: $BTCFLOW_DATA_DIR/batch)."),
    ] = None,
    batch_rows: Annotated[
        int | None, typer.Option(min=1, help="Close a batch at this many rows (give this or --window).")
    ] = None,
    window: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="Close a batch this many seconds (processing time) after its first row."
        ),
    ] = None,
    topic: Annotated[str | None, typer.Option(help="Topic to read (default: $BTCFLOW_TOPIC).")] = None,
    max_batches: Annotated[
        int | None, typer.Option(min=1, help="Stop after writing this many batches.")
    ] = None,
    fmt: Annotated[FileFormat, typer.Option("--format", help="Batch file format.")] = FileFormat.parquet,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="When no message came for this many seconds, write the open batch and exit."
        ),
    ] = None,
) -> None:
    """Read the topic as a consumer-group member and write batch files, exactly once across restarts.

    Without --max-batches or --idle-timeout it runs until Ctrl-C/SIGTERM; the open batch is then
    not written, and the next run reads its rows again from the offsets the manifest records.
    """
    settings = PipelineSettings()
    if topic:
        settings = settings.model_copy(update={"topic": topic})
    summary = run_consume(
        settings,
        out or settings.batch_dir,
        batch_rows=batch_rows,
        window_s=window,
        max_batches=max_batches,
        idle_timeout_s=idle_timeout,
        fmt=fmt.value,
        progress=sys.stderr.isatty(),
    )
    typer.echo(summary.line())


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("consume")(consume)
