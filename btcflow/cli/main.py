"""The `btcflow` command: parses arguments, reads settings once, calls the packages' functions.

Each area registers its commands from its own module; errors become one line on stderr and the
contract's exit status (2 bad input, 3 a service unreachable), or a traceback with --debug.
"""

from __future__ import annotations

import os
import sys

import typer

from btcflow.cli import (
    broker,
    consume,
    demo,
    hdfs,
    keys,
    monitor,
    produce,
    serve,
    spark,
    stack,
    tracking,
    train,
)
from btcflow.cli.groups import QuickHelpGroup
from core.access import refusal
from core.errors import BtcflowError
from core.secrets import mask_uri

app = typer.Typer(
    cls=QuickHelpGroup,
    help="Replay a Bitcoin minute file through Kafka into batch files, train Spark ML models "
    "tracked in MLflow, and serve the Production models over HTTP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    debug: bool = typer.Option(
        False,
        "--debug",
        help="Show the full traceback when a command fails, and every library's and the JVM's output "
        "(BTCFLOW_LOG_LEVEL=debug).",
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Log what each step does (BTCFLOW_LOG_LEVEL=info). The default, BTCFLOW_LOG_LEVEL=warning, "
        "shows btcflow's own lines only; Spark's JVM writes to $BTCFLOW_DATA_DIR/logs/spark-*.log.",
    ),
) -> None:
    from core import logs  # one level for this command and the processes it starts

    try:
        logs.configure(logs.level_from(debug, verbose))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


for module in (broker, produce, consume, spark, hdfs, tracking, stack, train, serve, keys, monitor, demo):
    module.register(app)


def command_paths() -> list[tuple[str, ...]]:
    """Every command line that has a --help: the root, each group and each command in it, in order.
    For tests and bench/cli.py, which check that every one of them answers quickly."""

    def walk(command: object, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        subcommands = getattr(command, "commands", {})  # a group's; typer's click has no public type here
        return [path] + [p for name, sub in subcommands.items() for p in walk(sub, (*path, name))]

    return walk(typer.main.get_command(app), ())


def _first_line(exc: Exception) -> str:
    """What went wrong, in one line: a JVM error (py4j's) by its Java exception, whose first line names
    the cause (a file an executor cannot read, say), not by the hundreds of lines of its trace."""
    text = str(getattr(exc, "java_exception", None) or exc)
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)


def main() -> None:
    debug = "--debug" in sys.argv[1:] or bool(os.environ.get("BTCFLOW_DEBUG"))
    try:
        status = app(standalone_mode=False)
    except typer.TyperException as exc:  # bad usage: one line (a bare group prints its help), exit 2
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if message:  # empty when typer has printed the help of a bare `btcflow` or `btcflow broker`
            print(f"btcflow: error: {message}", file=sys.stderr)
        status = getattr(exc, "exit_code", 2)
    except BtcflowError as exc:  # every error raised on purpose: one line and the contract's status
        if debug:
            raise
        print(f"btcflow: error: {mask_uri(str(exc))}", file=sys.stderr)  # it may name the store
        status = exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        print("btcflow: interrupted", file=sys.stderr)
        status = 130
    except Exception as exc:  # a bug, not a user error: still one line unless asked
        if debug:
            raise
        # a refusal of the tracking server (401, 403) that no call site turned into AccessRefused
        refused = refusal(exc, os.environ.get("MLFLOW_TRACKING_URI", "the MLflow tracking server"))
        if refused is not None:
            print(f"btcflow: error: {refused}", file=sys.stderr)
            status = refused.exit_code
        else:
            what = f"{type(exc).__name__}: {mask_uri(_first_line(exc))}"
            print(f"btcflow: unexpected {what} (rerun with --debug)", file=sys.stderr)
            status = 1
    sys.exit(status if isinstance(status, int) else 0)
