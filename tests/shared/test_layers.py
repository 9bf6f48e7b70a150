"""The folders are the pipeline's stages, and the imports keep to their order: the contracts in
pyproject.toml ([tool.importlinter]), checked by import-linter over every import, lazy ones too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_stage_imports_a_later_stage_and_the_shared_root_imports_none():
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    run = subprocess.run([command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout
