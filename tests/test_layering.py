"""The layering contracts in ``.importlinter``: each holds for the repository, and each breaks when a bad
import is planted in a copy of it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO_ROOT as REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("app", "benchmarks", "inference", "training")
LAYERS = "Layers: benchmarks above app and training"
INDEPENDENT = "The web app and the training package never import each other"
NO_WEB = "Only the web app uses the web framework and the database"


def lint(root: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.is_file():
        pytest.skip("import-linter is not installed: pip install -r requirements-dev.txt")
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / ".importlinter"), "--no-cache"],
                          cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"})


def verdicts(output: str) -> dict[str, str]:
    """``{contract name: "KEPT" | "BROKEN"}`` from lint-imports' summary lines."""
    found = {}
    for line in re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines():  # it colours its output whatever NO_COLOR says
        for name in (LAYERS, INDEPENDENT, NO_WEB):
            if line.startswith(name) and line.rstrip().endswith(("KEPT", "BROKEN")):
                found[name] = line.rstrip().rsplit(" ", 1)[1]
    return found


def test_the_repository_keeps_its_contracts():
    result = lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout
    assert verdicts(result.stdout) == {LAYERS: "KEPT", INDEPENDENT: "KEPT", NO_WEB: "KEPT"}


@pytest.mark.parametrize("module, line, broken", [
    ("inference/leak.py", "from app.models import Prediction\n", LAYERS),
    ("inference/leak.py", "import training.export\n", LAYERS),
    ("inference/leak.py", "import benchmarks.serve\n", LAYERS),
    ("app/leak.py", "import benchmarks.serve\n", LAYERS),
    ("app/leak.py", "import training.export\n", INDEPENDENT),
    ("training/leak.py", "from app import create_app\n", INDEPENDENT),
    ("inference/leak.py", "from flask import current_app\n", NO_WEB),
    ("inference/leak.py", "import werkzeug.datastructures\n", NO_WEB),
    ("training/leak.py", "import sqlalchemy\n", NO_WEB),
])
def test_a_bad_import_breaks_its_contract(tmp_path, module, line, broken):
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "static", "templates", "results", "configs",
                                                      "label_maps"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    (tmp_path / module).write_text(f'"""A module that breaks a contract."""\n{line}')
    result = lint(tmp_path)
    assert result.returncode != 0
    found = verdicts(result.stdout)
    assert found[broken] == "BROKEN", result.stdout
