"""`btcflow keys create|list|revoke`: the gateway's API keys, kept as hashes in BTCFLOW_API_KEYS_FILE."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from btcflow.cli.groups import group

keys_app = group(
    help="The gateway's API keys. The file is BTCFLOW_API_KEYS_FILE, else <BTCFLOW_DATA_DIR>/gateway/"
    "api-keys.json; only hashes are kept there. `btcflow serve` asks for a key only when "
    "BTCFLOW_API_KEYS_FILE is set (unset: the gateway is open).",
)


def _file() -> Path:
    from serving.settings import ServingSettings

    return ServingSettings().keys_file


@keys_app.command("create")
def create(
    name: str = typer.Argument(..., help="What the key is for: 1-64 letters, digits, '.', '_', '-'."),
) -> None:
    """Make a key and print it, once: stdout holds the key alone (KEY=$(btcflow keys create NAME))."""
    from serving import keys

    path = _file()
    key = keys.create(path, name)
    typer.echo(key)
    typer.echo(f"key {name} added to {path} (shown this once: only its hash is kept)", err=True)
    if not os.environ.get("BTCFLOW_API_KEYS_FILE"):
        typer.echo(
            f"the gateway asks for keys once it is told where they are: export BTCFLOW_API_KEYS_FILE={path}",
            err=True,
        )


@keys_app.command("list")
def list_keys() -> None:
    """Names, lookup ids, creation times and status of the keys (never a key or a hash)."""
    from serving import keys

    path = _file()
    try:
        records = keys.read_keys(path)
    except FileNotFoundError:
        records = []
    if not records:
        typer.echo(f"no keys in {path} (btcflow keys create NAME)")
        return
    width = max(len("name"), *(len(k.name) for k in records))
    typer.echo(f"{'name':{width}}  {'key starts':22}  {'created':25}  status")
    for k in records:
        status = "active" if k.active else f"revoked {k.revoked_at}"
        typer.echo(f"{k.name:{width}}  {f'btcflow_{k.id}_…':22}  {k.created_at:25}  {status}")


@keys_app.command("revoke")
def revoke(name: str = typer.Argument(..., help="The key's name.")) -> None:
    """Revoke a key: every gateway worker refuses it within BTCFLOW_POLL_INTERVAL_S. Exit 2 if no key has
    that name."""
    from serving import keys

    path = _file()
    if keys.revoke(path, name):
        typer.echo(f"key {name} revoked (every gateway worker refuses it within its poll interval)")
    else:
        typer.echo(f"key {name} was revoked already")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
