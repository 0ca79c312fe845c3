"""How fast `btcflow [command ...] --help` answers, for every command line, beside two baselines.

The goal (issue 10): every --help under 0.3 s. Wall time on a shared machine swings with its load, so each
round runs the baselines and every command one after the other, and the table gives each command's median
wall and CPU (user + sys) time and its ratios to the baselines' medians from the same rounds:

- `python -c pass`: the interpreter alone (what no Python command line can beat);
- a bare typer app with two commands answering --help: what typer and its rich help cost by themselves.

    .venv/bin/python bench/cli.py              # 5 rounds
    .venv/bin/python bench/cli.py --rounds 11
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from btcflow.cli.main import command_paths  # noqa: E402

GOAL_S = 0.3
BARE_TYPER = """
import typer

app = typer.Typer(add_completion=False)


@app.command()
def one(rows: int = typer.Option(1, help="Rows.")) -> None:
    \"\"\"The first command.\"\"\"


@app.command()
def two(seed: int = typer.Option(0, help="Seed.")) -> None:
    \"\"\"The second command.\"\"\"


app()
"""


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + sys of the child) of one run; it must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="runs of each command line (the median counts)")
    args = parser.parse_args()

    btcflow = Path(sys.executable).with_name("btcflow")  # the console script users run
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare_typer.py"
        bare.write_text(BARE_TYPER)
        lines = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "bare typer --help": [sys.executable, str(bare), "--help"],
        }
        lines |= {
            " ".join(["btcflow", *path, "--help"]): [str(btcflow), *path, "--help"]
            for path in command_paths()
        }
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in lines}
        for _ in range(args.rounds):
            for name, argv in lines.items():
                runs[name].append(timed(argv))

    def median(name: str, which: int) -> float:
        return statistics.median(run[which] for run in runs[name])

    python, typer_ = median("python -c pass", 0), median("bare typer --help", 0)
    load, cores = os.getloadavg()[0], os.cpu_count()
    print(f"{args.rounds} rounds; medians; ratios of wall time to the baselines' (same rounds)")
    print(
        f"load average {load:.1f} on {cores} cores: above that many, wall time includes waiting for a core\n"
    )
    print(f"{'command line':<38} {'wall s':>7} {'cpu s':>6} {'/python':>8} {'/typer':>7}  goal {GOAL_S} s")
    for name in lines:
        wall, cpu = median(name, 0), median(name, 1)
        verdict = "" if not name.startswith("btcflow") else ("ok" if wall < GOAL_S else "SLOW")
        print(f"{name:<38} {wall:7.3f} {cpu:6.3f} {wall / python:8.1f} {wall / typer_:7.2f}  {verdict}")
    commands = [name for name in lines if name.startswith("btcflow")]
    worst = max(commands, key=lambda name: median(name, 0))
    print(
        f"\nslowest: {worst} {median(worst, 0):.3f} s = {median(worst, 0) / typer_:.2f}x bare typer; "
        f"median of all {len(commands)}: {statistics.median(median(n, 0) for n in commands):.3f} s"
    )


if __name__ == "__main__":
    main()
