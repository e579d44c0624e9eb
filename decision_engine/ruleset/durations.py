"""Durations in rule files: `45s`, `3m`, `2h`, `1.5m`, `7d`; a bare number is refused.

A bare `60` could mean seconds or minutes to the person who wrote it, so every duration
names its unit; the engine works in seconds of event time.
"""

from __future__ import annotations

import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


class DurationError(ValueError):
    """A duration that does not read as a number and a unit (s, m, h)."""


def parse_duration(text: str) -> float:
    """Seconds in `text`, e.g. 90.0 for "90s" or "1.5m"."""
    raw = text.strip()
    match = _DURATION.fullmatch(raw)
    if match is None:
        if re.fullmatch(r"\d+(?:\.\d+)?", raw):
            raise DurationError(f"{raw!r} has no unit: write {raw}s, {raw}m or {raw}h")
        raise DurationError(
            f"{raw!r} is not a duration: write a number and a unit, e.g. 45s, 3m, 2h, 7d"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 180 → "3m", 90 → "90s", 7200 → "2h"."""
    # Days only from two on: "24h" reads better than "1d" as a bound of a moment window.
    for unit, size in (("d", 86_400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= (2 * size if unit == "d" else size) and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{seconds:g}s"
