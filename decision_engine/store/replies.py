"""The shapes of Redis replies our scripts and streams return, as plain data."""

from __future__ import annotations

from collections.abc import Sequence


def pairs(flat: Sequence[str]) -> dict[str, str]:
    """`[field, value, field, value…]` (HGETALL, a stream entry's fields) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def stream_entries(raw: Sequence[object]) -> list[tuple[str, dict[str, str]]]:
    """XRANGE / XREADGROUP / XAUTOCLAIM entries as (id, fields); deleted ones skipped."""
    out = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 2 or item[1] is None:
            continue  # XAUTOCLAIM names entries deleted meanwhile with no fields
        out.append((str(item[0]), pairs([str(part) for part in item[1]])))
    return out
