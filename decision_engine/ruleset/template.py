"""Agent scripts and guidance texts: literal text, placeholders and conditional text.

    {field}                 the field's value; absent reads as empty
    {field|fallback}        absent reads as `fallback`
    {field:money}           a format (see ruleset/formats.py), with a fallback: {field:money|n/a}
    {if condition}…{end}    text shown only when the condition (a rule's `when:`) is true
    {if condition}…{else}…{end}
    {{ and }}               a literal brace

Parsing (`parse_template`) needs nothing but the text; `check_template` then checks names,
formats and conditions against the declared fields when the ruleset loads, and
`compile_template` turns a checked template into one closure for the request path.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from babel import Locale

from decision_engine.ruleset.closures import compile_node
from decision_engine.ruleset.expr import ExprError, Node, parse
from decision_engine.ruleset.formats import (
    Format,
    FormatError,
    compile_format,
    kind_problem,
    parse_format,
)
from decision_engine.ruleset.runtime import Facts
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.typecheck import check, did_you_mean

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IF = re.compile(r"if\s")

Render = Callable[[Facts, Mapping[str, Any]], str]
"""A compiled template: (facts, values that shadow them, e.g. an offer's params) → text."""


class TemplateError(ValueError):
    """A script template that cannot be parsed or checked; col is 1-based."""

    def __init__(self, message: str, col: int) -> None:
        self.message = message
        self.col = col
        super().__init__(f"column {col}: {message}")


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str
    fallback: str
    col: int
    format: Format | None = None


@dataclass(frozen=True, slots=True)
class Conditional:
    """`{if condition}then{else}otherwise{end}`."""

    condition: Node
    """Columns in the tree are the template's (1-based)."""
    then: tuple[Part, ...]
    otherwise: tuple[Part, ...]
    col: int


Part = str | Placeholder | Conditional


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed script: literal text, placeholders and conditionals, in order."""

    parts: tuple[Part, ...]

    @property
    def names(self) -> tuple[Placeholder, ...]:
        """Every placeholder, inside conditionals too."""
        return tuple(p for p in _walk(self.parts) if isinstance(p, Placeholder))

    @property
    def conditionals(self) -> tuple[Conditional, ...]:
        return tuple(p for p in _walk(self.parts) if isinstance(p, Conditional))


def _walk(parts: tuple[Part, ...]) -> list[Placeholder | Conditional]:
    out: list[Placeholder | Conditional] = []
    for part in parts:
        if isinstance(part, Conditional):
            out.append(part)
            out.extend(_walk(part.then))
            out.extend(_walk(part.otherwise))
        elif isinstance(part, Placeholder):
            out.append(part)
    return out


# -- parsing -----------------------------------------------------------------------------


@dataclass
class _Block:
    """An open `{if}` (or the template itself, when `condition` is None)."""

    condition: Node | None = None
    col: int = 0
    then: list[Part] = field(default_factory=list)
    otherwise: list[Part] | None = None

    @property
    def parts(self) -> list[Part]:
        return self.then if self.otherwise is None else self.otherwise


def parse_template(text: str) -> Template:
    """Split a script into text, placeholders and conditionals; TemplateError says where not."""
    stack = [_Block()]
    literal: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        literal.append(text[pos : match.start()])
        pos = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
            continue
        if token in ("{", "}"):
            raise TemplateError(f"unmatched {token!r} (write {token * 2} for a brace)", pos)
        _flush(stack[-1], literal)
        _tag(stack, match.group(1), match.start() + 2)
    _flush(stack[-1], [*literal, text[pos:]])
    if len(stack) > 1:
        raise TemplateError("{if} has no {end}", stack[-1].col)
    return Template(tuple(stack[0].then))


def _flush(block: _Block, literal: list[str]) -> None:
    joined = "".join(literal)
    literal.clear()
    if joined:
        block.parts.append(joined)


def _tag(stack: list[_Block], body: str, col: int) -> None:
    """One `{…}`; col is that of the character after the brace."""
    word = body.strip()
    if word == "if":
        raise TemplateError("{if} needs a condition, e.g. {if tenure_months >= 24}", col - 1)
    if _IF.match(body):
        stack.append(_Block(_condition(body[2:], col + 2), col - 1))
    elif word == "else":
        if len(stack) == 1 or stack[-1].otherwise is not None:
            raise TemplateError("{else} without an open {if}", col - 1)
        stack[-1].otherwise = []
    elif word == "end":
        if len(stack) == 1:
            raise TemplateError("{end} without an open {if}", col - 1)
        done = stack.pop()
        assert done.condition is not None
        stack[-1].parts.append(
            Conditional(done.condition, tuple(done.then), tuple(done.otherwise or ()), done.col)
        )
    else:
        stack[-1].parts.append(_placeholder(body, col))


def _condition(text: str, col: int) -> Node:
    try:
        tree = parse(text)
    except ExprError as exc:
        raise TemplateError(f"condition: {exc.message}", col + exc.col - 1) from None
    return _shift(tree, col - 1)


def _shift(node: Node, by: int) -> Node:
    """The tree with columns counted in the template, so later errors point into it."""
    changes: dict[str, Any] = {"col": node.col + by}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, tuple) and value and hasattr(value[0], "col"):
            changes[f.name] = tuple(_shift(v, by) for v in value)
        elif hasattr(value, "col") and f.name != "col":
            changes[f.name] = _shift(value, by)
    shifted: Node = dataclasses.replace(node, **changes)
    return shifted


def _placeholder(body: str, col: int) -> Placeholder:
    head, bar, fallback = body.partition("|")
    name, colon, spec = head.partition(":")
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise TemplateError(f"placeholder {'{' + body + '}'!r} must name a field", col - 1)
    fmt = None
    if colon:
        try:
            fmt = parse_format(spec)
        except FormatError as exc:
            raise TemplateError(str(exc), col + len(name) + 1) from None
    return Placeholder(name, fallback if bar else "", col - 1, fmt)


# -- checking ----------------------------------------------------------------------------


def check_template(
    template: Template, fields: Mapping[str, FieldSpec], *, currency: str
) -> list[TemplateError]:
    """What is wrong with a template's names, formats and conditions, given the fields."""
    errors: list[TemplateError] = []
    for ph in template.names:
        spec = fields.get(ph.name)
        if spec is None:
            hint = did_you_mean(ph.name, sorted(fields))
            errors.append(TemplateError(f"unknown placeholder {{{ph.name}}}{hint}", ph.col))
        elif ph.format is not None:
            problem = kind_problem(ph.format, spec.kind, currency=currency)
            if problem is not None:
                errors.append(TemplateError(f"{{{ph.name}}}: {problem}", ph.col))
    for cond in template.conditionals:
        try:
            check(cond.condition, fields, want="bool")
        except ExprError as exc:
            errors.append(TemplateError(f"condition: {exc.message}", exc.col))
    return errors


# -- compiling ---------------------------------------------------------------------------


def compile_template(
    template: Template, *, dates: frozenset[str], locale: Locale, currency: str
) -> Render:
    """One closure for the request path: formats and conditions are resolved here, once."""
    pieces = _pieces(template.parts, dates, locale, currency)

    def render(facts: Facts, extra: Mapping[str, Any]) -> str:
        return _join(pieces, facts, extra)

    return render


_Piece = str | Render


def _join(pieces: tuple[_Piece, ...], facts: Facts, extra: Mapping[str, Any]) -> str:
    return "".join([p if isinstance(p, str) else p(facts, extra) for p in pieces])


def _pieces(
    parts: tuple[Part, ...], dates: frozenset[str], locale: Locale, currency: str
) -> tuple[_Piece, ...]:
    out: list[_Piece] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, Placeholder):
            out.append(_compile_placeholder(part, dates, locale, currency))
        else:
            out.append(_compile_conditional(part, dates, locale, currency))
    return tuple(out)


def _compile_placeholder(
    ph: Placeholder, dates: frozenset[str], locale: Locale, currency: str
) -> Render:
    name, fallback = ph.name, ph.fallback
    if ph.format is not None:
        show = compile_format(ph.format, locale, currency)

        def formatted(facts: Facts, extra: Mapping[str, Any]) -> str:
            value = extra[name] if name in extra else facts.get(name)
            return fallback if value is None else show(value)

        return formatted
    is_date = name in dates

    def plain(facts: Facts, extra: Mapping[str, Any]) -> str:
        text = display(extra[name] if name in extra else facts.get(name), is_date)
        return fallback if text is None else text

    return plain


def _compile_conditional(
    cond: Conditional, dates: frozenset[str], locale: Locale, currency: str
) -> Render:
    test = compile_node(cond.condition)
    then = _pieces(cond.then, dates, locale, currency)
    otherwise = _pieces(cond.otherwise, dates, locale, currency)

    def conditional(facts: Facts, extra: Mapping[str, Any]) -> str:
        # The condition sees what the placeholders see; unknown (an absent field) is false,
        # as in a rule's `when:`.
        seen = {**facts, **extra} if extra else facts
        return _join(then if test(seen) is True else otherwise, facts, extra)

    return conditional


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
