"""What reaches the terminal: btcflow's own lines, and the libraries' and the JVM's only when asked.

One level for the whole process tree, `BTCFLOW_LOG_LEVEL` (`warning` by default, `info`, `debug`; `--verbose`
and `--debug` raise it). `configure` sets it once at the command line's entry and exports it, so the btcflow
commands it starts (the demo's consumer, the gateway) follow the same level without flags.

- `warning`: warnings and errors only. Spark, MLflow, Kafka, py4j, alembic, uvicorn and httpx at warnings
  at most (kafka-python's retries at none: btcflow's own error says it once); MLflow's bare prints
  ("Successfully registered model", "Created version") made INFO records of its logger, so off, and its
  "View run" lines and artifact progress bars off; the JVM's own stderr (its launch warnings, netlib's BLAS
  probe, Spark's log4j console) in a file under `<data_dir>/logs`.
- `info`: btcflow's packages also say what each step does; the libraries stay at warnings.
- `debug`: everything, from every library (py4j's trace of each call into the JVM aside), and the JVM's
  output on the terminal as it writes.

At every level, a password in a URI is masked in every record (core.secrets.MaskSecrets).

Only the standard library (and core.secrets, which imports nothing else) is imported here: the CLI calls
`configure` before every command, `--help` too.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

from core.secrets import mask_log_records

ENV = "BTCFLOW_LOG_LEVEL"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
DEFAULT = "warning"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OWN = ("btcflow", "core", "services", "pipeline", "training", "serving", "monitoring")  # btcflow's loggers
FOREIGN = ("mlflow", "alembic", "sqlalchemy", "huey", "uvicorn", "httpx", "httpcore", "urllib3")
WIRE = ("py4j",)  # at DEBUG, every command sent to the JVM: ~3,500 records for one small model; INFO at most
CHATTY = ("kafka",)  # kafka-python logs every failed connection attempt; btcflow's errors say it once
MLFLOW_STREAM_MODULE = "mlflow.utils.logging_utils"  # home of the stream MLflow's bare prints go through


def level_from(debug: bool = False, verbose: bool = False) -> int:
    """The most talkative of --debug, --verbose and BTCFLOW_LOG_LEVEL; ValueError naming a bad value."""
    return min(
        logging.DEBUG if debug else logging.WARNING,
        logging.INFO if verbose else logging.WARNING,
        env_level(),
    )


def env_level() -> int:
    """BTCFLOW_LOG_LEVEL as a logging level (warning when unset); ValueError for anything else."""
    text = os.environ.get(ENV, "").strip().lower() or DEFAULT
    if text not in LEVELS:
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: use one of {', '.join(LEVELS)}")
    return LEVELS[text]


def name_of(level: int) -> str:
    """The BTCFLOW_LOG_LEVEL value for a level (one of LEVELS' keys)."""
    return next((name for name, value in LEVELS.items() if value >= level), DEFAULT)


def configure(level: int) -> None:
    """Set this process's logging for `level`, and export the level to the processes it starts.

    MLflow is imported only by the commands that need it, after this: `_import_mlflow` makes that import
    leave its loggers to this configuration and its bare prints follow it too.
    """
    os.environ[ENV] = name_of(level)
    debug = level <= logging.DEBUG
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "false" if debug else "true"  # "View run ..."
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "true" if debug else "false"
    logging.basicConfig(format=FORMAT)
    mask_log_records()  # no record carries a password, whatever the tracking URI holds
    logging.getLogger().setLevel(level)
    for name in OWN:
        logging.getLogger(name).setLevel(level)
    for name in FOREIGN:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else max(level, logging.WARNING))
    for name in WIRE:
        logging.getLogger(name).setLevel(max(level, logging.INFO if debug else logging.WARNING))
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.CRITICAL)
    if "mlflow" in sys.modules:  # imported before (a test, a notebook): its loggers keep their handler
        _route_mlflow_prints(sys.modules[MLFLOW_STREAM_MODULE])
    else:
        wrap_import("mlflow", _import_mlflow)


def _import_mlflow(run: Callable[[], None]) -> None:
    """`import mlflow`, told not to configure its loggers; then its bare prints made log records.

    Configured, MLflow's loggers would get a handler of their own and the level of MLFLOW_LOGGING_LEVEL
    (INFO), whatever `configure` said: unconfigured, they go through the root handler at its levels. The
    switch is an environment variable read during that import only, so it is set for it alone: the
    processes btcflow starts (`mlflow server` under `btcflow tracking`) keep MLflow's own logging.
    """
    previous = os.environ.get("MLFLOW_CONFIGURE_LOGGING")
    os.environ["MLFLOW_CONFIGURE_LOGGING"] = "false"
    try:
        run()
    finally:
        if previous is None:
            del os.environ["MLFLOW_CONFIGURE_LOGGING"]
        else:
            os.environ["MLFLOW_CONFIGURE_LOGGING"] = previous
    _route_mlflow_prints(sys.modules[MLFLOW_STREAM_MODULE])


class _PrintsToLog:
    """A text stream whose every line is an INFO record of the `mlflow` logger.

    MLflow's `eprint` ("Successfully registered model", "Created version", ...) prints to the stream object
    `MLFLOW_LOGGING_STREAM` of mlflow.utils.logging_utils, which it looks up at each call. That stream's own
    on/off switch is no use: MLflow's autologging helpers switch it back on when they end, as
    `log_model` does on its way. Replacing the object makes the prints follow the logger's level.
    """

    def __init__(self) -> None:
        self._pending = ""

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            if line.strip():
                logging.getLogger("mlflow").info(line)
        return len(text)

    def flush(self) -> None:
        pass


def _route_mlflow_prints(module: ModuleType) -> None:
    names = vars(module)  # mlflow.utils.logging_utils, whose `eprint` reads this global at each call
    if not isinstance(names.get("MLFLOW_LOGGING_STREAM"), _PrintsToLog):
        names["MLFLOW_LOGGING_STREAM"] = _PrintsToLog()


def jvm_log_dir(data_dir: Path) -> Path:
    """Where the JVM's own output goes when it is kept off the terminal: `<data_dir>/logs`."""
    return data_dir / "logs"


def jvm_log_dir_from_env() -> Path | None:
    """`$BTCFLOW_DATA_DIR/logs` in a process btcflow's command line configured (it exports
    BTCFLOW_LOG_LEVEL), for a JVM started where no settings name the data folder (the gateway's Spark
    engine); None elsewhere (a test, a notebook), which keeps the JVM's output where it always went."""
    if ENV not in os.environ:
        return None
    return jvm_log_dir(Path(os.environ.get("BTCFLOW_DATA_DIR") or "data"))


_STARTED = time.strftime("%Y%m%d-%H%M%S")


def jvm_log(log_dir: Path) -> Path:
    """This process's JVM log in `log_dir`: one file per process, as pyspark starts one JVM per process."""
    return log_dir.resolve() / f"spark-{_STARTED}-{os.getpid()}.log"


@contextmanager
def jvm_output(log_dir: Path | None) -> Iterator[Path | None]:
    """While the block runs, fd 2 is `jvm_log(log_dir)`, so a JVM started in it writes there for life.

    pyspark starts its JVM (spark-submit) with the process's own fd 2, and nothing in that launch can be
    told to be quiet: the JVM's "Using incubator modules", netlib's failed probes for a native BLAS, and then
    log4j's console (at warnings by Spark's settings). Pointing fd 2 at a file only for the launch keeps all
    of it there and the terminal free; Python's own sys.stderr is flushed before and given back after. Yields
    the file, or None when nothing is redirected (no `log_dir`, or the level is debug). A JVM already
    running keeps writing where it started: a second Spark session of the process (pyspark reuses its JVM)
    appends nothing.
    """
    if log_dir is None or env_level() <= logging.DEBUG:
        yield None
        return
    path = jvm_log(log_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with path.open("ab") as log:
            os.dup2(log.fileno(), 2)
        yield path
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


class _ImportWrapper:  # a sys.meta_path finder (importlib.abc's base class costs 3 ms to import)
    """Runs the first import of module `name` inside `around` (which must call the `run` it is given).

    The only way to act on a module's import without importing it now (MLflow takes seconds, and the CLI
    configures logging before every command, --help included): the first finder asked for `name`, it
    leaves sys.meta_path, hands the search to the other finders and wraps the found loader's exec_module.
    """

    def __init__(self, name: str, around: Callable[[Callable[[], None]], None]) -> None:
        self.name = name
        self.around = around

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target)  # type: ignore[attr-defined]
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            self.around(lambda: run(module))

        setattr(loader, "exec_module", exec_module)  # noqa: B010 - on this module's own loader only
        return spec


def wrap_import(name: str, around: Callable[[Callable[[], None]], None]) -> None:
    """Run the coming first import of `name` inside `around` (the latest call's `around` for a name)."""
    for finder in [f for f in sys.meta_path if isinstance(f, _ImportWrapper) and f.name == name]:
        sys.meta_path.remove(finder)
    sys.meta_path.insert(0, _ImportWrapper(name, around))
