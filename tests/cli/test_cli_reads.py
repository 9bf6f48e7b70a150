"""The list commands read with the same functions as the desk, and load only what they read with: the
read modules (ingest/stored.py, newsletters/stored.py, subscribers/stored.py) use the database and none of
the libraries that fetch feeds, render editions or check addresses (bench/cli.py times the commands)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Run in a fresh interpreter: this process has loaded every stage already.
SCRIPT = """
import contextlib, io, json, sys
from syndicate.cli.main import main

with contextlib.redirect_stdout(io.StringIO()):
    main(sys.argv[1:], standalone_mode=False)
heavy = ("httpx", "feedparser", "premailer", "cssutils", "email_validator")
print(json.dumps([name for name in heavy if name in sys.modules]))
"""


@pytest.fixture
def environment(tmp_path) -> dict[str, str]:
    found = {k: v for k, v in os.environ.items() if not k.startswith("SYNDICATE_")}
    found.update(SYNDICATE_DATA_DIR=str(tmp_path / "data"), SYNDICATE_SECRET_KEY="s")
    subprocess.run([sys.executable, "-m", "syndicate", "db", "upgrade"], env=found, check=True, capture_output=True,
                   timeout=120)
    return found


@pytest.mark.parametrize("command", ["feed list", "article list", "newsletter list", "edition list",
                                     "edition list --status sent", "subscriber list"])
def test_a_listing_loads_none_of_the_stages_libraries(environment, command):
    run = subprocess.run([sys.executable, "-c", SCRIPT, *command.split()], env=environment, capture_output=True,
                         text=True, timeout=120)

    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == []
