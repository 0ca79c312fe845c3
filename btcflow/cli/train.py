"""`btcflow train` and `btcflow promote`: parse options, read settings once, call training's functions."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from core import logs
from training.specs import SPECS


class Scheme(StrEnum):
    segment = "segment"
    cumulative = "cumulative"


MODEL_HELP = f"Model to train: {', '.join(SPECS)} or all. Repeat for several."


def _models(values: list[str]) -> list[str]:
    return list(SPECS) if "all" in values else values


def print_summary(rows: list[dict]) -> None:
    """The versions table (model, version, batches, key metric, baseline, fit seconds, stage); the demo
    prints it too."""
    from rich.table import Table

    from btcflow.cli.output import console

    columns = ("model", "version", "batches", "metric", "value", "baseline", "fit_s", "stage")
    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row[k]) for k in columns))
    console().print(table)


def spark_log_line(data_dir: Path) -> str | None:
    """Where this process's Spark JVM wrote its own output, if it wrote any (`train` and the demo say it)."""
    jvm_log = logs.jvm_log(logs.jvm_log_dir(data_dir))
    return f"Spark's own output (the JVM's warnings): {jvm_log}" if jvm_log.exists() else None


def train(
    model: Annotated[list[str], typer.Option("--model", "-m", help=MODEL_HELP)],
    batches: str | None = typer.Option(
        None, "--batches", "-b", help="Batches by number: 2, 1-3, 1,3 or all. Required unless --watch."
    ),
    scheme: Annotated[
        Scheme, typer.Option(help="segment: one version per batch; cumulative: one per prefix 1, 1+2, ...")
    ] = Scheme.segment,
    num_trees: int | None = typer.Option(None, help="Trees per forest (high_low). Default from the spec."),
    max_depth: int | None = typer.Option(None, help="Tree depth (high_low). Default from the spec."),
    reg_param: float | None = typer.Option(None, help="Regularisation (close, trend). Default 0."),
    max_iter: int | None = typer.Option(None, help="Optimiser iterations (close, trend). Default 100."),
    watch_: bool = typer.Option(
        False, "--watch", help="Train a new version as each batch closes (ignores --batches)."
    ),
    promote: bool = typer.Option(False, "--promote", help="With --watch: promote with the --best gate."),
    require_baseline: bool = typer.Option(
        True,
        "--require-baseline/--no-require-baseline",
        help="With --watch --promote: refuse a version that does not beat the naive baseline on the gate's "
        "window (on by default: nobody watches an unattended loop).",
    ),
    max_batches: int | None = typer.Option(None, help="With --watch: stop after this many new batches."),
    idle_timeout: float | None = typer.Option(
        None, help="With --watch: stop after this many seconds without a new batch."
    ),
    poll: float = typer.Option(2.0, help="With --watch: seconds between looks at the manifest."),
) -> None:
    """Train model versions on batch files: one tracked MLflow run and one registered version each."""
    from btcflow.cli.tracking import as_role
    from core.errors import BadInput
    from training.registry import Promotion, stages
    from training.settings import TrainingSettings
    from training.tracking import runs_link
    from training.train import summary_rows, train_models
    from training.watch import watch

    settings = TrainingSettings()
    as_role(settings.tracking_uri, "trainer")
    overrides = {"num_trees": num_trees, "max_depth": max_depth, "reg_param": reg_param, "max_iter": max_iter}
    models = _models(model)
    if watch_:

        def report(item: object) -> None:
            if isinstance(item, Promotion):
                typer.echo(item.message)
            else:
                key, value, base = item.primary  # type: ignore[attr-defined]
                typer.echo(
                    f"{item.registered_name} v{item.version} on batches {item.batches}: "  # type: ignore[attr-defined]
                    f"{key}={value:.6g} (baseline {base:.6g})"
                )

        results = watch(
            settings,
            models,
            scheme.value,
            promote,
            max_batches,
            idle_timeout,
            poll,
            overrides,
            report=report,
            require_baseline=require_baseline,
            progress=sys.stderr.isatty(),
        )
    elif batches is None:
        raise BadInput("give --batches SPEC (2, 1-3, 1,3 or all), or --watch to follow closing batches")
    else:
        progress = sys.stderr.isatty()  # the live line per fit, on a terminal only (as produce's bar)
        results = train_models(settings, models, batches, scheme.value, overrides, progress=progress)
    if watch_ and not results:
        typer.echo("no new batch closed: nothing trained")
    if results:
        print_summary(
            summary_rows(results, stages(settings, [(r.registered_name, r.version) for r in results]))
        )
    if line := spark_log_line(settings.data_dir):
        typer.echo(line)
    typer.echo(f"compare runs: {runs_link(settings.tracking_uri, settings.experiment)}")


def promote(
    model: str = typer.Option(..., "--model", "-m", help=f"Model: {', '.join(SPECS)}."),
    version: int | None = typer.Option(None, "--version", help="Make this version Production."),
    best: bool = typer.Option(
        False, "--best", help="Promote the best newer version only if it beats Production on unseen rows."
    ),
    require_baseline: bool = typer.Option(
        False,
        "--require-baseline",
        help="With --best: also refuse a version that does not beat the naive baseline on the same rows "
        "(close: the last Close before them; high_low: Open; trend: a constant, roc_auc 0.5).",
    ),
    rollback: bool = typer.Option(
        False,
        "--rollback",
        help="Production back to the version it replaced, as `btcflow history` records it (exit 2 when "
        "no earlier version is recorded).",
    ),
) -> None:
    """Make a version Production (stage and alias `production`): by number, by the --best gate, or back
    to the previous one. Every move is recorded (`btcflow history`); a version that holds only the stage
    or only the alias gets both. Exit 2 also when another promotion moved Production meanwhile."""
    from btcflow.cli.tracking import as_role
    from core.errors import BadInput
    from training.gate import promote_best
    from training.registry import promote_version
    from training.registry import rollback as roll_back
    from training.settings import TrainingSettings
    from training.tracking import runs_link

    if [version is not None, best, rollback].count(True) != 1:
        raise BadInput("give exactly one of --version V, --best or --rollback")
    if require_baseline and not best:
        raise BadInput("--require-baseline goes with --best")
    settings = TrainingSettings()
    as_role(settings.tracking_uri, "trainer")
    if best:
        result = promote_best(settings, model, require_baseline=require_baseline)
    elif rollback:
        result = roll_back(settings, model)
    else:
        result = promote_version(settings, model, version)  # type: ignore[arg-type]
    typer.echo(result.message)
    typer.echo(f"compare runs: {runs_link(settings.tracking_uri, settings.experiment)}")


def register(app: typer.Typer) -> None:
    """Add `train`, `promote` and `history` to the root app."""
    from btcflow.cli import history

    app.command("train")(train)
    app.command("promote")(promote)
    app.command("history")(history.history)
