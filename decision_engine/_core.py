"""Whether the pure decision core runs compiled (build_core.py, mypyc) or from its sources.

A compiled module sits beside its source, and Python's importer prefers it. The sources
are loaded instead when DECISION_ENGINE_PURE_PYTHON is set (how the fallback is tested)
or when a source is newer than the build (edited since `make core`: the build would run
the old code). Always for the whole core at once: compiled modules call one another in
C, so one stale module would run inside a fresh one.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PURE_ENV = "DECISION_ENGINE_PURE_PYTHON"
_PACKAGE = Path(__file__).resolve().parent
_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
SHARED_LIBRARY = _PACKAGE / f"core__mypyc{_SUFFIX}"
"""What build_core.py builds the core into; its time is the build's."""


class _FromSource(importlib.abc.MetaPathFinder):
    """Finds the listed modules' sources, ahead of their compiled builds."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        return None if source is None else importlib.util.spec_from_file_location(fullname, source)


def _compiled() -> dict[str, Path]:
    """Module name -> source, for each module built beside its source (the core's
    modules are all one package below this one)."""
    out: dict[str, Path] = {}
    for built in _PACKAGE.glob(f"*/*{_SUFFIX}"):
        source = built.with_name(built.name.removesuffix(_SUFFIX) + ".py")
        if source.is_file():
            parts = source.relative_to(_PACKAGE.parent).with_suffix("").parts
            out[".".join(parts)] = source
    return out


def changed_since_build(sources: dict[str, Path]) -> list[str]:
    """The names of the sources newer than the build (all of them when there is none)."""
    if not SHARED_LIBRARY.is_file():
        return sorted(sources)
    built_at = SHARED_LIBRARY.stat().st_mtime
    return sorted(n for n, p in sources.items() if p.stat().st_mtime > built_at)


def _choose() -> str:
    if not SHARED_LIBRARY.is_file():
        return "source (not compiled: make core)"
    modules = _compiled()
    if os.environ.get(PURE_ENV):
        why = f"{PURE_ENV} is set"
    else:
        stale = changed_since_build(modules)
        if not stale:
            return f"compiled ({len(modules)} modules)"
        why = f"{stale[0]} changed since the build: make core"
    if not any(isinstance(f, _FromSource) for f in sys.meta_path):
        sys.meta_path.insert(0, _FromSource(modules))
    return f"source ({why})"


MODE = _choose()
"""How the core runs, for the startup log and the tests: "compiled (...)" or "source (why)"."""
