"""The CI vulnerability gate: a finding fails, an unreachable service is never reported as a pass.

The vulnerability service is not reachable from every build machine, so the verdict logic is driven by
a stand-in ``pip-audit`` that prints what pip-audit prints (its ``--format json`` shape) for each case.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest

from support import REPO_ROOT


def load_script():
    spec = importlib.util.spec_from_file_location("audit_requirements",
                                                  REPO_ROOT / "scripts" / "audit_requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


audit = load_script()
CHECKED = {"name": "flask", "version": "3.1.3", "vulns": []}
VULNERABLE = {"name": "pillow", "version": "9.0.0",
              "vulns": [{"id": "PYSEC-2022-168", "fix_versions": ["9.0.1"], "aliases": [], "description": ""}]}
UNCHECKED = {"name": "numpy", "skip_reason": "Dependency not found on PyPI and could not be audited: numpy (2.2.6)"}


def stand_in(tmp_path, dependencies: list[dict]):
    """An executable that answers like ``pip-audit --format json`` with ``dependencies``."""
    script = tmp_path / "pip-audit"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""
        import json
        print(json.dumps({{"dependencies": {dependencies!r}, "fixes": []}}))
    """))
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize("dependencies,require_service,status", [
    ([CHECKED], False, 0),
    ([CHECKED, VULNERABLE], False, 1),
    ([VULNERABLE, UNCHECKED], False, 1),
    ([CHECKED, UNCHECKED], False, 0),
    ([CHECKED, UNCHECKED], True, 2),
    ([UNCHECKED], True, 2),
])
def test_verdicts(tmp_path, capsys, dependencies, require_service, status):
    argv = ["--pip-audit", stand_in(tmp_path, dependencies), "--venv", str(REPO_ROOT / ".venv")]
    assert audit.main(argv + (["--require-service"] if require_service else [])) == status
    output = capsys.readouterr()
    if any("vulns" in d and d["vulns"] for d in dependencies):
        assert "VULNERABLE pillow 9.0.0: PYSEC-2022-168 (fixed in 9.0.1)" in output.out
    if any("skip_reason" in d for d in dependencies):
        assert "could NOT be checked" in output.err and "This is not a pass" in output.err
    else:
        assert "WARNING" not in output.err


def test_a_broken_pip_audit_is_an_error_not_a_pass(tmp_path):
    script = tmp_path / "pip-audit"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.exit('error: resolver failed')\n")
    script.chmod(0o755)
    with pytest.raises(RuntimeError, match="resolver failed"):
        audit.main(["--pip-audit", str(script)])


def test_summary_counts():
    findings, unchecked, checked = audit.summarize([CHECKED, VULNERABLE, UNCHECKED])
    assert findings == [("pillow", "9.0.0", "PYSEC-2022-168", "9.0.1")]
    assert len(unchecked) == 1 and checked == 2
