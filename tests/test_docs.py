"""
The repository documents itself and stands alone: an API page per public module (docs/api/, Sphinx autodoc),
linked from the index, and no text that points outside the repository (notes users do not have).
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sb3_safemeta"


def public_modules() -> list[str]:
    """Every module of the package with code of its own (the algorithm packages' ``__init__`` only re-export)."""
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            continue  # packages: their docstrings introduce the modules, documented on their own pages
        if any(part.startswith("_") for part in parts) and parts != ["sb3_safemeta", "__main__"]:
            continue
        modules.append(".".join(parts))
    return modules


def test_every_public_module_has_an_api_page_linked_from_the_index():
    index = (ROOT / "docs" / "api" / "index.md").read_text()
    missing, unlinked = [], []
    for module in public_modules():
        page = ROOT / "docs" / "api" / f"{module}.md"
        if not page.exists():
            missing.append(module)
            continue
        text = page.read_text()
        assert f"automodule:: {module}" in text or f"{{py:module}} {module}" in text, module
        if not re.search(rf"^{re.escape(module)}$", index, flags=re.MULTILINE):
            unlinked.append(module)
    assert not missing, f"modules without a docs/api page: {missing}"
    assert not unlinked, f"docs/api pages missing from docs/api/index.md: {unlinked}"
    assert "api/index" in (ROOT / "docs" / "index.md").read_text()


# built from pieces so that this file does not match itself
FORBIDDEN = ["DESIGN" + ".md", "DEPENDENCIES" + ".md", "/work" + "/", "shared" + "/paper"]


@pytest.mark.parametrize("needle", FORBIDDEN)
def test_nothing_cites_a_file_outside_the_repository(needle):
    """Code, tests and docs cite the paper (section, equation) and our own docs pages only."""
    roots = ["sb3_safemeta", "tests", "docs", "examples", "scripts", "benchmarks", "hyperparams", ".ci"]
    files = [path for name in roots if (ROOT / name).exists() for path in (ROOT / name).rglob("*") if path.is_file()]
    files += [ROOT / name for name in ("README.md", "Makefile", "setup.cfg", "pyproject.toml", "MANIFEST.in")]
    offending = []
    for path in files:
        if "_build" in path.parts or path.suffix not in {".py", ".md", ".cfg", ".toml", ".yml", ".yaml", ".sh", ".txt", ""}:
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if needle in text:
            offending.append(str(path.relative_to(ROOT)))
    assert not offending, f"{needle!r} cited in {offending}"
