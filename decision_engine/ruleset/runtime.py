"""What running compiled rules needs, without the compiler: the facts a request is
typed into, the shape of a compiled test, and how to walk a candidate bitmask.

`decide/` imports this and `compiled.py`, never `compile.py` (which builds the closures).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

Facts = Mapping[str, Any]
"""Typed field values of one request; an absent key is an absent value. Dates are ordinals."""
Fn = Callable[[Facts], Any]

TODAY = "@today"
"""Facts key holding today's date ordinal (set by the caller: the core reads no clock)."""

Checks = tuple[tuple[Fn, Callable[[Facts], str]], ...]
"""Every top-level `and` term of a rule: its test, and how to say why it failed."""


def first_failure(checks: Checks, facts: Facts) -> str | None:
    """The first term that is not true, with the actual values; None when all hold."""
    for test, describe in checks:
        if test(facts) is not True:
            return describe(facts)
    return None


def set_bits(mask: int, start: int = 0) -> Iterator[int]:
    """Positions of the set bits, lowest first; no bit is set below `start`."""
    # One C-level conversion, then str.find per bit: far cheaper than big-int
    # arithmetic per bit on a mask of a thousand rules. Shifting by `start` first keeps
    # the conversion to the window that holds bits: a group of a 10,000-offer ruleset
    # converts its own width, not the whole mask's (bin() is ~7 µs at 10,000 bits).
    bits = bin(mask >> start)[:1:-1]
    i = bits.find("1")
    while i >= 0:
        yield start + i
        i = bits.find("1", i + 1)
