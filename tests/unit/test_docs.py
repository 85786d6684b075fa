"""The documentation stays true: docs/openapi.json is what the API serves, and every relative link in README.md
and docs/ names a file that exists (`mkdocs build --strict` checks the site's own links and anchors; this checks
the README too, which GitHub shows outside the site)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "deploy" / "README.md"])
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"\A[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, mailto:, ...


def openapi_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("partsight_openapi_script", ROOT / "scripts" / "openapi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative_links(page: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(text) if not EXTERNAL.match(target) and not target.startswith("#")]


def test_committed_openapi_schema_is_what_the_app_serves() -> None:
    script = openapi_script()
    committed = ROOT / "docs" / "openapi.json"
    assert committed.is_file(), "docs/openapi.json is missing: run `python scripts/openapi.py`"
    served = script.render(script.schema())
    assert committed.read_text(encoding="utf-8") == served, (
        "docs/openapi.json differs from the schema the app serves: run `python scripts/openapi.py`"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_name_existing_files(page: Path) -> None:
    assert page.is_file(), f"{page.relative_to(ROOT)} is missing"
    broken = [
        target for target in relative_links(page) if not (page.parent / target.split("#", 1)[0]).resolve().exists()
    ]
    assert not broken, f"{page.relative_to(ROOT)} links to files that do not exist: {broken}"


def test_the_link_check_sees_links() -> None:
    readme = relative_links(ROOT / "README.md")
    assert "docs/contract.md" in readme
    assert any(target.startswith("docs/") and "#" in target for target in readme)
    assert relative_links(ROOT / "docs" / "http-api.md").count("openapi.json") >= 1


def test_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines; the details belong in docs/"
