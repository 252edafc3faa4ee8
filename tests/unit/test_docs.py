"""docs/ stays true to the code and the README and docs link only into the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    files = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / f for f in files.stdout.split() if "node_modules" not in f]


def test_the_generated_parts_of_docs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_docs.py", "--check"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"run scripts/gen_docs.py:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("doc", ["api.md", "app-guide.md", "operator-guide.md"])
def test_the_guides_exist_and_the_readme_links_them(doc: str) -> None:
    assert (REPO / "docs" / doc).stat().st_size > 2000
    assert f"docs/{doc}" in (REPO / "README.md").read_text()


def test_every_relative_link_resolves_inside_the_repository() -> None:
    broken = []
    for md in markdown_files():
        for target in LINK.findall(md.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = (md.parent / target.split("#", 1)[0]).resolve()
            if not path.is_relative_to(REPO) or not path.exists():
                broken.append(f"{md.relative_to(REPO)} → {target}")
    assert broken == []


def test_readme_links_only_into_the_repository() -> None:
    external = [t for t in LINK.findall((REPO / "README.md").read_text()) if re.match(r"^[a-z]+:", t)]
    assert [t for t in external if not t.startswith(("http://127.0.0.1", "http://localhost"))] == []
