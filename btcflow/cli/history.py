"""`btcflow history`: every promotion of a model, newest first, as the registry records them."""

from __future__ import annotations

import json

import typer

from training.specs import SPECS


def history(
    model: str = typer.Option(..., "--model", "-m", help=f"Model: {', '.join(SPECS)}."),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON array of the records (at, by, from, to, metric, values...) instead."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the newest N promotions."),
) -> None:
    """Every promotion of a model, newest first: when, by whom (hand: promote --version, gate: --best,
    rollback: --rollback, monitor), from which version to which, and the metrics the gate compared."""
    from btcflow.cli.tracking import as_role
    from training.registry import promotions
    from training.settings import TrainingSettings
    from training.specs import get_spec

    spec = get_spec(model)
    settings = TrainingSettings()
    as_role(settings.tracking_uri, "trainer")
    records = promotions(settings, model)[:limit]
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in records], indent=2))
        return
    if not records:
        typer.echo(f"no promotion of {spec.registered_name} recorded yet")
        return
    from rich.table import Table

    from btcflow.cli.output import console

    table = Table("when (UTC)", "by", "from", "to", "metric", "compared on the window", "baseline", "rows")
    for r in records:
        compared = ", ".join(f"v{v} {x:.6g}" for v, x in r.values.items())
        table.add_row(
            r.at.strftime("%Y-%m-%d %H:%M:%S"),
            r.by,
            f"v{r.previous}" if r.previous else "-",
            f"v{r.to}",
            r.metric or "-",
            compared or "-",
            f"{r.baseline:.6g}" if r.baseline is not None else "-",
            f"{r.rows:,}" if r.rows is not None else "-",
        )
    console().print(table)
