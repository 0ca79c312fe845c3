"""`btcflow consume`: Kafka topic → batch files by row count or time window (pipeline.consumer works)."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from pipeline import defaults


class FileFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


def consume(
    out: Annotated[
        str | None,
        typer.Option(
            help="Where the batch files and manifest.json go: a folder, or hdfs://host:port/path "
            "(default: BTCFLOW_BATCH_URI, else $BTCFLOW_DATA_DIR/batch)."
        ),
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
    group: Annotated[
        str | None,
        typer.Option(help=f"Consumer group (default: $BTCFLOW_CONSUMER_GROUP, {defaults.CONSUMER_GROUP})."),
    ] = None,
    max_batches: Annotated[
        int | None, typer.Option(min=1, help="Stop after writing this many batches (per member).")
    ] = None,
    fmt: Annotated[FileFormat, typer.Option("--format", help="Batch file format.")] = FileFormat.parquet,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="When no message came for this many seconds, write the open batch and exit."
        ),
    ] = None,
    instances: Annotated[
        int,
        typer.Option(
            min=1,
            help="Start this many members of the group, all writing --out, and wait for them. Members "
            "started by hand (the same --out and group) share the work the same way.",
        ),
    ] = 1,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning",
            help="Where the dataset's resume offset no longer fits the topic (offsets deleted by "
            "retention, or the topic deleted and recreated), read that partition from its beginning "
            "instead of stopping with exit 2.",
        ),
    ] = False,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Progress line on stderr (default: on a terminal)."),
    ] = None,
) -> None:
    """Read the topic as a consumer-group member and write batch files, exactly once across restarts.

    Without --max-batches or --idle-timeout it runs until Ctrl-C/SIGTERM; the open batch is then
    not written, and the next run reads its rows again from the offsets the manifest records.
    """
    from pipeline.settings import PipelineSettings

    settings = PipelineSettings()
    if topic:
        settings = settings.model_copy(update={"topic": topic})
    if group:
        settings = settings.model_copy(update={"consumer_group": group})
    out_dir = out or settings.batch_location
    show = sys.stderr.isatty() if progress is None else progress
    if instances > 1:
        from pipeline.batching import BatchPolicy

        BatchPolicy(batch_rows, window)  # a bad policy is one line now, not N members' lines later
        member = ["--out", str(out_dir), "--topic", settings.topic, "--group", settings.consumer_group]
        member += ["--format", fmt.value, "--no-progress"]
        for flag, value in (
            ("--batch-rows", batch_rows),
            ("--window", window),
            ("--max-batches", max_batches),
            ("--idle-timeout", idle_timeout),
        ):
            if value is not None:
                member += [flag, str(value)]
        if from_beginning:
            member.append("--from-beginning")
        _run_instances(instances, member, out_dir, show)
        return
    from pipeline.consumer import consume as run_consume

    summary = run_consume(
        settings,
        out_dir,
        batch_rows=batch_rows,
        window_s=window,
        max_batches=max_batches,
        idle_timeout_s=idle_timeout,
        fmt=fmt.value,
        progress=show,
        from_beginning=from_beginning,
    )
    typer.echo(summary.line())


def _run_instances(count: int, member_args: list[str], out_dir: str, show: bool) -> None:
    """N members with the same options, one summary line each; the exit status is the worst of theirs.
    The progress line follows the dataset: rows and batches the manifest lists, rejects kept."""
    from core.progress import RowProgress
    from core.signals import stop_on_signals
    from pipeline.consumer import COUNTS
    from pipeline.group import run_members
    from pipeline.store import BatchStore

    store = BatchStore(out_dir)
    listed, rejected = len(store.entries), store.rejected_count()  # what this run found

    with stop_on_signals() as stop, RowProgress(show, f"{count} members", counts=COUNTS) as bar:

        def tick() -> None:
            new = store.entries[listed:]
            rows = sum(e.rows for e in new)
            bar.update(rows, batches=len(new), rejected=store.rejected_count() - rejected)

        results = run_members(count, member_args, stop, tick)
    for member, (status, line) in enumerate(results, start=1):
        typer.echo(f"member {member}: {line or f'exit {status}'}")
    worst = max(status for status, _ in results)
    if worst:
        raise typer.Exit(worst)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("consume")(consume)
