"""The short chaos run (bench/chaos.py --short) on both stores: the whole system as deployed (two
workers and beat, on a Redis and a PostgreSQL of the run's own, then on SQLite and the embedded broker),
at least 30 faults each, and nothing lost, nothing stuck, duplicates only inside the documented windows.

The run starts its own servers, so it needs redis-server and PostgreSQL's initdb installed, not running.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIGURES, REQUIRED

BENCH = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


def _initdb() -> bool:
    return shutil.which("initdb") is not None or any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


@pytest.fixture
def servers_installed():
    missing = [name for name, found in (("redis-server", shutil.which("redis-server")), ("initdb", _initdb()))
               if not found]
    if missing:
        message = f"{' and '.join(missing)} not installed: the chaos run starts servers of its own"
        if REQUIRED:
            pytest.fail(message + " (SYNDICATE_REQUIRE_SERVICES=1 makes it mandatory)")
        pytest.skip(message)


def test_a_short_chaos_run_loses_nothing_leaves_nothing_stuck_and_repeats_only_inside_the_windows(
        servers_installed):
    run = subprocess.run([sys.executable, str(BENCH), "--short", "--store", "postgres,embedded"],
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = json.loads(run.stdout.strip().splitlines()[-1])["runs"]
    # the seed, the processes' last warnings, the fault tables: what a failure needs to be replayed and read
    report = run.stdout.partition("\n")[0] + "\n…\n" + run.stdout[-14000:]
    for record in records:
        FIGURES.append(f"chaos ({record['store']}): {record['faults']} faults, {record['kills']} kills, "
                       f"lost {record['lost']}, stuck {record['stuck']}, duplicates {record['duplicates']} "
                       f"(window {record['window']})")
        assert record["faults"] >= 30, report
        assert len(record["kinds"]) >= (19 if record["store"] == "postgres" else 17), report  # every kind
        assert record["lost"] == 0, report
        assert record["stuck"] == 0, report
        assert record["duplicates"] <= record["window"], report
        assert record["injected"] == 0, report
        assert record["mail"]["sent"] > 0 and record["social"]["posted"] > 0, report  # it did run
    assert [r["store"] for r in records] == ["postgres", "embedded"]
