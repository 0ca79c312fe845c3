"""The typer group class of `btcflow` and its sub-groups (broker, data, spark, tracking, stack).

typer (0.29) converts every parameter through a pydantic TypeAdapter, built on first use; a group's own
--help flag, absent from `btcflow train --help`, has no default and so is converted too, which imports
pydantic (~0.07 s of CPU) before the command's help is even printed. A default of False is passed through
as is. Only speed depends on this: with another typer, help still works, only slower (bench/cli.py).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup


class QuickHelpGroup(TyperGroup):
    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None and option.default is None:
            option.default = False
        return option


def group(help: str, **options: Any) -> typer.Typer:
    """A sub-command group: bare, it prints its help (`btcflow broker`)."""
    return typer.Typer(cls=QuickHelpGroup, help=help, no_args_is_help=True, **options)
