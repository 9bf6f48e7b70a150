"""How long the `syndicate` command takes to start, and what its imports cost.

    python bench/cli.py              # 10 runs of each command
    python bench/cli.py --runs 30

Times whole processes (wall clock, median of --runs after one warm-up), each beside the same run's
baseline: a bare `python -c pass` (the interpreter alone) and `python -c "import click"` (the least a
click command can cost). The commands:

  --help        `syndicate --help`: every command group is built, none of the stages' libraries loaded
  feed list     `syndicate feed list` on a fresh SQLite database (a listing: settings, one query)
  edition list  `syndicate edition list`
  account list  `syndicate account list`

Then `python -X importtime` of `--help` and of `feed list`, with their ten costliest imports
(cumulative). Targets (issue 18): --help <= 0.3 s, a listing <= 0.6 s. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"--help": 0.3, "feed list": 0.6, "edition list": 0.6, "account list": 0.6}


def timed(argv: list[str], env: dict[str, str], runs: int) -> float:
    subprocess.run(argv, env=env, capture_output=True, check=True)  # warm-up: the page cache, .pyc files
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def import_profile(argv: list[str], env: dict[str, str], top: int = 10) -> list[tuple[float, str]]:
    run = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, capture_output=True, text=True)
    rows = []
    for line in run.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
            if cumulative.isdigit():
                rows.append((int(cumulative) / 1e6, name))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="syndicate-cli-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNDICATE_")}
    env["SYNDICATE_DATA_DIR"] = str(folder / "data")
    syndicate = [sys.executable, "-m", "syndicate"]
    try:
        subprocess.run([*syndicate, "db", "upgrade"], env=env, capture_output=True, check=True)
        interpreter = timed([sys.executable, "-c", "pass"], env, args.runs)
        click = timed([sys.executable, "-c", "import click"], env, args.runs)
        print(f"baseline: python -c pass {interpreter:.3f} s; python -c 'import click' {click:.3f} s "
              f"(median of {args.runs})")
        print(f"{'command':<14} {'wall s':>7} {'target':>7} {'× click':>8}")
        figures = {}
        for name, target in TARGETS.items():
            figures[name] = timed([*syndicate, *name.split()], env, args.runs)
            verdict = "met" if figures[name] <= target else "NOT met"
            print(f"{name:<14} {figures[name]:7.3f} {target:7.1f} {figures[name] / click:8.1f}  {verdict}")
        for name in ("--help", "feed list"):
            print(f"\nimports of `syndicate {name}`, costliest first (cumulative s):")
            for seconds, module in import_profile(["-m", "syndicate", *name.split()], env):
                print(f"  {seconds:6.3f}  {module}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
