"""The documentation: a front-page README short enough to read, and a docs site that builds.

`mkdocs build --strict` fails on a broken link or anchor, a page of docs/ missing from the nav, a
nav entry without its page, or an API page whose module the docstring renderer cannot read. It
builds offline (mkdocs.yml asks for no web font and no remote inventory).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 150


def _build(site: Path, project: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(project / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move the detail to a page of docs/"


def test_the_docs_site_builds_strict(tmp_path):
    result = _build(tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    pages = sorted(p.relative_to(ROOT / "docs").with_suffix("") for p in (ROOT / "docs").rglob("*.md"))
    built = [tmp_path / "site" / (str(p.parent) if p.name == "index" else str(p)) / "index.html" for p in pages]
    assert all(b.is_file() for b in built), [str(b) for b in built if not b.is_file()]


def test_a_page_missing_from_the_nav_or_a_broken_link_fails_the_build(tmp_path):
    """The check above can fail: on a copy of the docs, a page nobody put in the nav, and a link
    to a page that does not exist, each break the strict build."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "docs", project / "docs")
    shutil.copy(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    (project / "include").symlink_to(ROOT / "include")
    (project / "docs" / "orphan_page.md").write_text("# Orphan\n\nSee [the gate](no_such_page.md).\n")
    result = _build(tmp_path / "site", project)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "orphan_page.md" in out and "no_such_page.md" in out, out


def test_the_api_pages_render_the_docstrings(tmp_path):
    result = _build(tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    gate = (tmp_path / "site" / "api/gate/index.html").read_text()
    assert "GatePolicy" in gate and "paired" in gate
