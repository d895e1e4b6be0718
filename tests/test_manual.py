"""The manual: README.md for a newcomer, the MkDocs site in ``docs/`` for the rest.

``mkdocs build --strict`` runs here so that a broken link, a missing anchor or a page left out of the
navigation fails the suite, and the README stays short enough to read before running anything.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import yaml

from support import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"


def mkdocs_build(config_dir, site_dir) -> subprocess.CompletedProcess:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: `make install-dev` installs requirements-dev.txt")
    pytest.importorskip("material", reason="mkdocs-material is not installed: `make install-dev` installs it")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(config_dir / "mkdocs.yml"), "--site-dir", str(site_dir)],
                          cwd=config_dir, capture_output=True, text=True, timeout=300)


def test_the_manual_builds_strictly(tmp_path):
    result = mkdocs_build(REPO_ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "api" / "index.html").is_file()


def test_a_broken_link_or_anchor_fails_the_build(tmp_path):
    """The strict build is only worth running if it really fails on what rots: a moved page or heading."""
    for broken in ("[gone](no-such-page.md)", "[gone](api.md#no-such-heading)"):
        copy = tmp_path / broken[8:].replace("#", "_").replace(".", "_")
        shutil.copytree(DOCS, copy / "docs")
        shutil.copy(REPO_ROOT / "mkdocs.yml", copy / "mkdocs.yml")
        with open(copy / "docs" / "index.md", "a", encoding="utf-8") as page:
            page.write(f"\nSee {broken}.\n")
        result = mkdocs_build(copy, copy / "site")
        assert result.returncode != 0, f"{broken} built without complaint"


def nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert pages == set(nav_pages(config["nav"]))


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 300
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "run"], ["make", "test"]]
    for needed in ("http://127.0.0.1:8000/", "make admin", "/admin/", "docs/index.md"):
        assert needed in text


def test_the_readme_links_every_manual_page_and_nothing_missing():
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO_ROOT / target).is_file(), target
    linked = set(re.findall(r"\]\(docs/([^)#]+\.md)", text))
    assert {path.name for path in DOCS.glob("*.md")} <= linked | {"index.md"}


def test_generated_blocks_moved_with_their_sections():
    """Each generated table sits once in the manual, on the page of its section, still between its markers."""
    pages = {path.name: path.read_text(encoding="utf-8") for path in DOCS.glob("*.md")}
    expected = {"bench:serve": "performance.md", "bench:input_pipeline": "performance.md",
                "bench:model_zoo": "models.md", "answers:car-models-196": "models.md",
                "bench:admin_review": "admin.md", "bench:explain": "answers.md", "bench:memory_formats": "deploy.md"}
    for marker, page in expected.items():
        holders = [name for name, text in pages.items() if f"<!-- {marker} -->" in text]
        assert holders == [page], marker
        assert f"<!-- /{marker} -->" in pages[page]
