"""Type-check a condition against the declared fields, before anything goes live."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

from decision_engine.ruleset.expr import (
    FUNCTIONS,
    HISTORY_FUNCTIONS,
    NOTICE_DAYS,
    OUTCOME_DAYS,
    OUTCOME_KEYWORDS,
    Arith,
    Call,
    Compare,
    ExprError,
    Field,
    Literal,
    Member,
    Neg,
    Node,
    Not,
    outcome_calls,
    render,
)
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.vocabulary import OFFER_OUTCOMES

_KIND_TYPE = {
    "number": "number",
    "integer": "number",
    "string": "string",
    "enum": "string",
    "date": "date",
    "bool": "bool",
}


def did_you_mean(name: str, known: Mapping[str, object] | list[str]) -> str:
    """A " (did you mean 'x'?)" suffix when a close name exists."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True, slots=True)
class OutcomeNames:
    """What days_since_outcome() may name: the ruleset's offer ids and categories."""

    offers: frozenset[str]
    categories: frozenset[str]
    notices: frozenset[str] = frozenset()
    """What days_since_notice() may name: the notice ids of the `notices:` section."""


def check(
    node: Node,
    fields: Mapping[str, FieldSpec],
    *,
    want: str,
    outcomes: OutcomeNames | None = None,
) -> None:
    """Raise ExprError unless `node` is well typed and of type `want` ("bool" or "number").

    `outcomes` None: the condition cannot read the offer history (moments), so
    days_since_outcome() is an error.
    """
    for call in outcome_calls(node):
        _check_outcome_call(call, outcomes)
    for call in outcome_calls(node, NOTICE_DAYS):
        _check_notice_call(call, outcomes)
    got = _infer(node, fields)
    if got != want:
        what = "a condition (true/false)" if want == "bool" else "a number"
        raise ExprError(f"expected {what}, but this is a {got}", node.col)


def _field(node: Field, fields: Mapping[str, FieldSpec]) -> FieldSpec:
    spec = fields.get(node.name)
    if spec is None:
        raise ExprError(f"unknown field {node.name!r}{did_you_mean(node.name, fields)}", node.col)
    return spec


def _infer(node: Node, fields: Mapping[str, FieldSpec]) -> str:
    if isinstance(node, Literal):
        return _literal_type(node)
    if isinstance(node, Field):
        return _KIND_TYPE[_field(node, fields).kind]
    if isinstance(node, Call):
        return _call(node, fields)
    if isinstance(node, Neg):
        _expect(node.operand, fields, "number", "-")
        return "number"
    if isinstance(node, Arith):
        _expect(node.left, fields, "number", node.op)
        _expect(node.right, fields, "number", node.op)
        return "number"
    if isinstance(node, Compare):
        return _compare(node, fields)
    if isinstance(node, Member):
        left = _infer(node.left, fields)
        for item in node.items:
            if _literal_type(item) != left:
                raise ExprError(
                    f"{_show(item)} is a {_literal_type(item)}, but the left side is a {left}",
                    item.col,
                )
            _check_domain(node.left, item, fields)
        return "bool"
    if isinstance(node, Not):
        _expect(node.operand, fields, "bool", "not")
        return "bool"
    for operand in node.operands:
        _expect(operand, fields, "bool", node.op)
    return "bool"


def _literal_type(node: Literal) -> str:
    if isinstance(node.value, bool):
        return "bool"
    return "string" if isinstance(node.value, str) else "number"


def _expect(node: Node, fields: Mapping[str, FieldSpec], want: str, op: str) -> None:
    got = _infer(node, fields)
    if got != want:
        raise ExprError(f"{op!r} needs a {want}, but this is a {got}", node.col)


def _compare(node: Compare, fields: Mapping[str, FieldSpec]) -> str:
    left, right = _infer(node.left, fields), _infer(node.right, fields)
    if left == "date" or right == "date":
        raise ExprError(
            "compare dates through days_until(field) or days_since(field), e.g. "
            "days_until(contract_end) <= 60",
            node.col,
        )
    if left != right:
        raise ExprError(
            f"cannot compare a {left} with a {right}: {_show(node.left)} {node.op} "
            f"{_show(node.right)}",
            node.col,
        )
    if node.op not in ("==", "!=") and left != "number":
        raise ExprError(f"{node.op!r} compares numbers, not {left}s", node.col)
    if isinstance(node.right, Literal):
        _check_domain(node.left, node.right, fields)
    if isinstance(node.left, Literal):
        _check_domain(node.right, node.left, fields)
    return "bool"


def _check_domain(side: Node, literal: Literal, fields: Mapping[str, FieldSpec]) -> None:
    """A literal compared with an enum or bounded field must be a value it can take."""
    if not isinstance(side, Field):
        return
    spec = fields[side.name]
    if spec.kind == "enum" and isinstance(literal.value, str) and literal.value not in spec.values:
        raise ExprError(
            f"{literal.value!r} is not a value of {side.name} "
            f"({', '.join(spec.values)}){did_you_mean(literal.value, list(spec.values))}",
            literal.col,
        )
    if isinstance(literal.value, float) and not isinstance(literal.value, bool):
        low, high = spec.minimum, spec.maximum
        if (low is not None and literal.value < low) or (high is not None and literal.value > high):
            bounds = f"{'' if low is None else f'{low:g}'}..{'' if high is None else f'{high:g}'}"
            raise ExprError(
                f"{literal.value:g} is outside the range of {side.name} ({bounds})", literal.col
            )


def _call(node: Call, fields: Mapping[str, FieldSpec]) -> str:
    signature = FUNCTIONS.get(node.function)
    if signature is None:
        raise ExprError(
            f"unknown function {node.function!r}{did_you_mean(node.function, list(FUNCTIONS))}",
            node.col,
        )
    params, result = signature
    if node.function in HISTORY_FUNCTIONS:
        return result  # checked by _check_outcome_call / _check_notice_call
    if node.keywords:
        raise ExprError(f"{node.function}() takes no keyword arguments", node.keywords[0][1].col)
    if len(node.args) != len(params):
        raise ExprError(
            f"{node.function}() takes {len(params)} argument(s), got {len(node.args)}", node.col
        )
    for arg, param in zip(node.args, params, strict=True):
        if param == "field" and isinstance(arg, Call) and arg.function in HISTORY_FUNCTIONS:
            continue  # exists(days_since_outcome(...)): is there such an outcome at all
        if param in ("field", "date"):
            if not isinstance(arg, Field):
                raise ExprError(f"{node.function}() takes a field name", arg.col)
            spec = _field(arg, fields)
            if param == "date" and spec.kind != "date":
                raise ExprError(
                    f"{node.function}() takes a date field; {arg.name} is a {spec.kind}", arg.col
                )
        else:
            _expect(arg, fields, param, f"{node.function}()")
    return result


def _check_outcome_call(node: Call, names: OutcomeNames | None) -> None:
    usage = (
        f'{OUTCOME_DAYS}() takes category="..." or offer="...", and optionally '
        f"outcome= one of {', '.join(OFFER_OUTCOMES)}"
    )
    if names is None:
        raise ExprError(
            f"{OUTCOME_DAYS}() reads the offer history, which moment conditions do not see",
            node.col,
        )
    if node.args:
        raise ExprError(usage, node.args[0].col)
    given = dict(node.keywords)
    for key, literal in node.keywords:
        if key not in OUTCOME_KEYWORDS:
            hint = did_you_mean(key, list(OUTCOME_KEYWORDS))
            message = f"{OUTCOME_DAYS}(): unknown argument {key}={hint}; {usage}"
            raise ExprError(message, literal.col)
    if ("category" in given) == ("offer" in given):
        raise ExprError(usage, node.col)
    checks = (
        ("category", names.categories, "no offer has category"),
        ("offer", names.offers, "no offer has id"),
        ("outcome", frozenset(OFFER_OUTCOMES), "unknown outcome"),
    )
    for key, known, problem in checks:
        found = given.get(key)
        if found is None:
            continue
        value = str(found.value)
        if value not in known:
            raise ExprError(
                f"{OUTCOME_DAYS}(): {problem} {value!r}{did_you_mean(value, sorted(known))}",
                found.col,
            )


def _check_notice_call(node: Call, names: OutcomeNames | None) -> None:
    usage = f'{NOTICE_DAYS}() takes a notice id, e.g. {NOTICE_DAYS}("card_compromised")'
    if names is None:
        raise ExprError(
            f"{NOTICE_DAYS}() reads the notice history, which moment conditions do not see",
            node.col,
        )
    if node.keywords:
        raise ExprError(usage, node.keywords[0][1].col)
    if len(node.args) != 1:
        raise ExprError(usage, node.col)
    (arg,) = node.args
    if not isinstance(arg, Literal) or not isinstance(arg.value, str):
        raise ExprError(usage, arg.col)
    if arg.value not in names.notices:
        raise ExprError(
            f"{NOTICE_DAYS}(): no notice has id {arg.value!r}"
            + did_you_mean(arg.value, sorted(names.notices)),
            arg.col,
        )


def _show(node: Node) -> str:
    return render(node)
