"""The README's architecture section names the modules as they are."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "decision_engine"


def _section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Architecture\n")
    end = readme.find("\n## ", start + 1)
    return readme[start:] if end < 0 else readme[start:end]


def _bullets() -> dict[str, str]:
    """Package folder → the text of its bullet."""
    bullet = r"^- `decision_engine/(\w+)/`:(.*?)(?=^- |^\*\*|\Z)"
    found = re.findall(bullet, _section(), re.M | re.S)
    return {folder: text for folder, text in found}


def _modules(folder: str) -> set[str]:
    return {p.name for p in (PACKAGE / folder).glob("*.py") if p.name != "__init__.py"}


def test_every_package_has_its_bullet() -> None:
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py") if p.parent.name != "_proto"}
    assert packages - set(_bullets()) == set()


def test_every_module_named_exists_and_every_module_is_named() -> None:
    for folder, text in _bullets().items():
        named = set(re.findall(r"`(?:[\w/]+/)?(\w+\.py)`", text))
        modules = _modules(folder)
        assert named - modules == set(), f"{folder}/: the README names modules that do not exist"
        assert modules - named == set(), f"{folder}/: modules the README does not name"
