"""Every Lua script names the keys it touches in KEYS, never in its text or from ARGV:
what Redis Cluster needs to route a script (and what it checks: CROSSSLOT otherwise)."""

from __future__ import annotations

import importlib
import pkgutil
import re

import decision_engine.store as store
from decision_engine.store.connection import Script

# redis.call('COMMAND', first, ...): for these commands `first` is a key.
_CALL = re.compile(r"redis\.call\('([A-Z]+)',\s*([^,)]+)")
_KEYLESS = {"TIME", "INFO", "PING"}
_ALIAS = re.compile(r"local (\w+) = KEYS\[\d+\]")


def _declared(first: str, aliases: set[str]) -> bool:
    """A key from KEYS: KEYS[i], unpack(KEYS, ...), or a local that names KEYS[i]."""
    return first.startswith(("KEYS[", "unpack(KEYS")) or first in aliases


def scripts() -> dict[str, Script]:
    found = {}
    for module in pkgutil.iter_modules(store.__path__):
        loaded = importlib.import_module(f"{store.__name__}.{module.name}")
        for name, value in vars(loaded).items():
            if isinstance(value, Script):
                found[f"{module.name}.{name}"] = value
    return found


def test_there_are_scripts_to_check() -> None:
    assert len(scripts()) >= 10


def test_every_key_a_script_touches_comes_from_keys() -> None:
    undeclared = set()
    for name, script in scripts().items():
        aliases = set(_ALIAS.findall(script.source))
        for command, first in _CALL.findall(script.source):
            if command not in _KEYLESS and not _declared(first.strip(), aliases):
                undeclared.add(f"{name}: {command} {first.strip()}")
    assert undeclared == set()
