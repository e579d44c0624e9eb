"""Agent scripts: text with `{field}` or `{field|fallback}` placeholders; `{{` is a brace."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}|]*)(?:\|([^{}]*))?\}|[{}]")


class TemplateError(ValueError):
    """A script template that cannot be parsed; col is 1-based."""

    def __init__(self, message: str, col: int) -> None:
        self.message = message
        self.col = col
        super().__init__(f"column {col}: {message}")


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str
    fallback: str
    col: int


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed script: literal text and placeholders, in order."""

    parts: tuple[str | Placeholder, ...]

    @property
    def names(self) -> tuple[Placeholder, ...]:
        return tuple(p for p in self.parts if isinstance(p, Placeholder))

    def render(self, lookup: Callable[[str], str | None]) -> str:
        """Fill the placeholders; an absent value takes the fallback (empty by default)."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                text = lookup(part.name)
                out.append(part.fallback if text is None else text)
        return "".join(out)


def parse_template(text: str) -> Template:
    """Split a script into text and placeholders."""
    parts: list[str | Placeholder] = []
    literal: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        literal.append(text[pos : match.start()])
        pos = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
            continue
        if token in ("{", "}"):
            raise TemplateError(f"unmatched {token!r} (write {token * 2} for a brace)", pos)
        name = (match.group(1) or "").strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise TemplateError(f"placeholder {token!r} must name a field", match.start() + 1)
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(Placeholder(name, match.group(2) or "", match.start() + 1))
    literal.append(text[pos:])
    if "".join(literal):
        parts.append("".join(literal))
    return Template(tuple(parts))


def display(value: Any, is_date: bool) -> str | None:
    """How a value reads in a script: whole numbers without decimals, money with two.

    Shared by offer scripts (decide/) and guidance texts (moments/), so both read alike.
    """
    if value is None:
        return None
    if is_date and isinstance(value, int):
        return date.fromordinal(value).isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return str(value)
