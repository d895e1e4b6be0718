"""Check the pinned requirements and the installed environment for known vulnerabilities (pip-audit).

Two audits: every pin in the requirements files (the versions a deployment installs), and every
package installed in the project's virtual environment (the transitive dependencies the files do not
pin). The result is one of three, and the exit status says which:

* 0 - every package was checked and none has a known vulnerability;
* 1 - a known vulnerability was found (the table lists package, version, advisory and fixed versions);
* 0 with a loud ``WARNING`` (or 2 with ``--require-service``) - the vulnerability service could not be
  reached, so some or all packages were NOT checked. pip-audit itself reports that case as
  "No known vulnerabilities found", which is why this wrapper exists.

Usage:
    python scripts/audit_requirements.py [--pip-audit PATH] [--venv .venv] [--require-service]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENT_FILES = ("requirements.txt", "requirements-train.txt", "requirements-dev.txt")


def run_audit(pip_audit: str, arguments: list[str]) -> list[dict]:
    """Run pip-audit with JSON output and return its ``dependencies`` list.

    Raises:
        RuntimeError: pip-audit failed for another reason than finding vulnerabilities.
    """
    command = [pip_audit, *arguments, "--format", "json", "--progress-spinner", "off"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    try:
        return json.loads(result.stdout)["dependencies"]
    except (json.JSONDecodeError, KeyError):
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"pip-audit {' '.join(arguments)} failed: {tail}") from None


def summarize(dependencies: list[dict]) -> tuple[list[tuple[str, str, str, str]], list[str], int]:
    """Split pip-audit's answer into findings, unchecked packages and the number checked.

    Returns:
        ``(findings, unchecked, checked)``: findings as (package, version, advisory id, fixed versions).
    """
    findings, unchecked, checked = [], [], 0
    for dependency in dependencies:
        if "skip_reason" in dependency:
            unchecked.append(f"{dependency['name']}: {dependency['skip_reason']}")
            continue
        checked += 1
        for vulnerability in dependency.get("vulns", []):
            findings.append((dependency["name"], dependency["version"], vulnerability["id"],
                             ", ".join(vulnerability.get("fix_versions", [])) or "no fix yet"))
    return findings, unchecked, checked


def main(argv: list[str] | None = None) -> int:
    """Audit, print a verdict, return the exit status (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pip-audit", default=shutil.which("pip-audit") or "pip-audit",
                        help="pip-audit executable (default: the one on PATH)")
    parser.add_argument("--venv", type=Path, default=REPO_ROOT / ".venv",
                        help="virtual environment whose installed packages are audited too")
    parser.add_argument("--require-service", action="store_true",
                        help="fail (status 2) when the vulnerability service cannot be reached")
    args = parser.parse_args(argv)

    pins = [argument for name in REQUIREMENT_FILES for argument in ("-r", name)]
    audits = {"pinned requirements": pins + ["--no-deps", "--disable-pip"]}
    site_packages = sorted(args.venv.glob("lib/python*/site-packages"))
    if site_packages:
        audits[f"installed in {args.venv.name}"] = ["--path", str(site_packages[0])]
    findings, unchecked, checked = [], [], 0
    for label, arguments in audits.items():
        found, skipped, ok = summarize(run_audit(args.pip_audit, arguments))
        findings += found
        unchecked += skipped
        checked += ok
        print(f"{label}: {ok} checked, {len(skipped)} not checked, {len(found)} known vulnerabilities")

    for package, version, advisory, fixed in sorted(set(findings)):
        print(f"VULNERABLE {package} {version}: {advisory} (fixed in {fixed})")
    if unchecked:
        print(f"WARNING: {len(unchecked)} packages could NOT be checked for vulnerabilities; the "
              f"vulnerability service (PyPI JSON API) is probably unreachable from this machine. "
              f"This is not a pass. First: {unchecked[0]}", file=sys.stderr)
    if findings:
        return 1
    if unchecked and args.require_service:
        return 2
    print("no known vulnerabilities" + (" among the packages that could be checked" if unchecked else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
