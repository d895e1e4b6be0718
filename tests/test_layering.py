"""The layering contracts in ``.importlinter``: the app never imports training, the model side no web code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.is_file():
        pytest.skip("import-linter is not installed: pip install -r requirements-dev.txt")
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / ".importlinter"), "--no-cache"],
                          cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"})


def test_the_repository_keeps_its_contracts():
    result = lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("inference/leak.py", "from flask import current_app\n", "knows nothing of Flask"),
    ("inference/leak.py", "from app.models import Prediction\n", "knows nothing of Flask"),
    ("app/leak.py", "import training.export\n", "never imports the training package"),
])
def test_a_forbidden_import_breaks_the_suite(tmp_path, module, line, contract):
    for package in ("app", "inference", "training"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "static",
                                                                                         "templates"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    (tmp_path / module).write_text(f'"""A module that breaks a contract."""\n{line}')
    result = lint(tmp_path)
    assert result.returncode != 0
    assert contract in result.stdout and "BROKEN" in result.stdout.upper()
