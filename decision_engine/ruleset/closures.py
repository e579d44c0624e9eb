"""Compile conditions into closures.

Conditions use three-valued logic: a comparison with an absent field is *unknown*
(None); `not unknown` stays unknown; a rule applies only when its condition is True.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from decision_engine.ruleset.expr import (
    HISTORY_FUNCTIONS,
    Arith,
    Call,
    Compare,
    Field,
    Literal,
    Logic,
    Member,
    Neg,
    Node,
    Not,
    conjuncts,
    render,
)
from decision_engine.ruleset.runtime import TODAY, Checks, Facts, Fn

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


# A context variable, not a threading.local subclass: each loader thread (and task) has
# its own, and mypyc cannot compile a subclass of threading.local (build_core.py).
_memo: ContextVar[dict[int, tuple[Node, Fn]] | None] = ContextVar("compile_memo", default=None)


@contextlib.contextmanager
def shared_compilation() -> Iterator[None]:
    """Within it, a node met again (one parsed expression shared by many rules, as the
    loader shares repeated texts) is compiled once: closures are pure, so one serves all.

    Keyed by identity, not equality (`Literal(True) == Literal(1.0)` in Python); each
    entry holds its node, so no id is reused while the memo lives."""
    outer = _memo.get()
    if outer is None:
        _memo.set({})
    try:
        yield
    finally:
        if outer is None:
            _memo.set(None)


def compile_node(node: Node) -> Fn:
    """A closure computing the node's value (None when unknown)."""
    memo = _memo.get()
    if memo is None:
        return _compile(node)
    found = memo.get(id(node))
    if found is None:
        found = memo[id(node)] = (node, _compile(node))
    return found[1]


def _compile(node: Node) -> Fn:
    if isinstance(node, Literal):
        value = node.value
        return lambda facts: value
    if isinstance(node, Field):
        name = node.name
        return lambda facts: facts.get(name)
    if isinstance(node, Compare):
        return _compile_compare(node)
    if isinstance(node, Member):
        return _compile_member(node)
    if isinstance(node, Logic):
        return _compile_logic(node)
    if isinstance(node, Not):
        inner = compile_node(node.operand)

        def negate(facts: Facts) -> bool | None:
            result = inner(facts)
            return None if result is None else not result

        return negate
    if isinstance(node, Neg):
        inner = compile_node(node.operand)

        def minus(facts: Facts) -> float | None:
            value = inner(facts)
            return None if value is None else -value

        return minus
    if isinstance(node, Arith):
        return _compile_arith(node)
    return _compile_call(node)


def _compile_compare(node: Compare) -> Fn:
    return _binary(node.left, node.right, _COMPARE[node.op])


def _compile_member(node: Member) -> Fn:
    items = frozenset(item.value for item in node.items)
    left = compile_node(node.left)
    negated = node.negated

    def member(facts: Facts) -> bool | None:
        value = left(facts)
        if value is None:
            return None
        return (value in items) != negated

    return member


def _compile_logic(node: Logic) -> Fn:
    parts = tuple(compile_node(o) for o in node.operands)
    stop = node.op != "and"  # `and` stops at False, `or` at True

    def logic(facts: Facts) -> bool | None:
        result: bool | None = not stop
        for part in parts:
            value = part(facts)
            if value is stop:
                return bool(stop)
            if value is None:
                result = None
        return result

    return logic


def _divide(a: float, b: float) -> float | None:
    return None if b == 0 else a / b


_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _divide,
}


def constant(node: Node) -> float | None:
    """The value of a numeric expression made of literals only (folded at load time)."""
    if isinstance(node, Literal):
        return node.value if isinstance(node.value, float) else None
    if isinstance(node, Neg):
        inner = constant(node.operand)
        return None if inner is None else -inner
    if isinstance(node, Arith):
        a, b = constant(node.left), constant(node.right)
        if a is None or b is None:
            return None
        result = _ARITH[node.op](a, b)
        return None if result is None else float(result)
    if isinstance(node, Call) and node.function in _NUMERIC:
        args = [constant(a) for a in node.args]
        if any(a is None for a in args):
            return None
        return float(_NUMERIC[node.function](*args))
    return None


def _compile_arith(node: Arith) -> Fn:
    folded = constant(node)
    if folded is not None:
        return lambda facts: folded
    return _binary(node.left, node.right, _ARITH[node.op])


def _binary(left_node: Node, right_node: Node, apply: Callable[[Any, Any], Any]) -> Fn:
    """`apply(left, right)`, unknown when either side is; comparisons and arithmetic alike.

    The common shapes (`clv > 5000`, `clv * 0.1`, `balance - credit_limit`) get closures
    without nested calls: these run once per candidate rule per request.
    """
    if isinstance(left_node, Field) and isinstance(right_node, Literal):
        name, literal = left_node.name, right_node.value

        def field_literal(facts: Facts) -> Any:
            value = facts.get(name)
            return None if value is None else apply(value, literal)

        return field_literal
    if isinstance(left_node, Field) and isinstance(right_node, Field):
        left_name, right_name = left_node.name, right_node.name

        def field_field(facts: Facts) -> Any:
            a = facts.get(left_name)
            if a is None:
                return None
            b = facts.get(right_name)
            return None if b is None else apply(a, b)

        return field_field
    left, right = compile_node(left_node), compile_node(right_node)

    def general(facts: Facts) -> Any:
        a = left(facts)
        if a is None:
            return None
        b = right(facts)
        return None if b is None else apply(a, b)

    return general


def _compile_call(node: Call) -> Fn:
    fn = node.function
    if fn in HISTORY_FUNCTIONS:
        # Computed from the offer or notice history with the facts (decide/facts.py),
        # under the call's canonical text; absent when the customer has no such event.
        key = render(node)
        return lambda facts: facts.get(key)
    if fn == "exists" and isinstance(node.args[0], Call):
        key = render(node.args[0])  # exists(days_since_outcome(...)), or of a notice
        return lambda facts: key in facts
    if fn in ("exists", "days_until", "days_since"):
        assert isinstance(node.args[0], Field)
        name = node.args[0].name
        if fn == "exists":
            return lambda facts: name in facts
        sign = 1 if fn == "days_until" else -1

        def days(facts: Facts) -> float | None:
            value = facts.get(name)
            return None if value is None else float(sign * (value - facts[TODAY]))

        return days
    folded = constant(node)
    if folded is not None:
        return lambda facts: folded
    args = tuple(compile_node(a) for a in node.args)
    impl: Callable[..., float] = _NUMERIC[fn]
    if len(args) == 2:
        first, second = args

        def call2(facts: Facts) -> float | None:
            a = first(facts)
            if a is None:
                return None
            b = second(facts)
            return None if b is None else float(impl(a, b))

        return call2

    def call(facts: Facts) -> float | None:
        values = [a(facts) for a in args]
        if any(v is None for v in values):
            return None
        return float(impl(*values))

    return call


def _round(x: float) -> float:
    # Half away from zero (12.5 -> 13), as people round money, not banker's rounding.
    return float(math.copysign(math.floor(abs(x) + 0.5), x))


_NUMERIC: dict[str, Callable[..., float]] = {"min": min, "max": max, "round": _round, "abs": abs}


def compile_all(conditions: Sequence[Node]) -> Fn | None:
    """One closure for conditions that must all hold (None when there are none)."""
    if not conditions:
        return None
    if len(conditions) == 1:
        return compile_node(conditions[0])
    return compile_node(Logic("and", tuple(conditions), conditions[0].col))


# -- explanations ------------------------------------------------------------------------


def compile_checks(terms: Sequence[Node]) -> Checks:
    """Compiled once per ruleset, so an explanation costs evaluations, not compilation."""
    return tuple(
        (compile_node(part), describer(part)) for term in terms for part in conjuncts(term)
    )


def describer(node: Node) -> Callable[[Facts], str]:
    """`clv 3200 is not > 5000`, `churn_risk is absent (...)`, or the term with its values."""
    text = render(node)
    name = _fact_name(node.left) if isinstance(node, Compare | Member) else None
    if isinstance(node, Compare | Member) and name is not None:
        if isinstance(node, Compare):
            expected = f"is not {node.op} {render(node.right)}"
        else:
            items = ", ".join(render(i) for i in node.items)
            expected = f"is {'' if node.negated else 'not '}in [{items}]"

        absent = (
            f"{name} is absent ({text})"
            if isinstance(node.left, Field)
            else f"{name} is absent: no such outcome in the offer history ({text})"
        )

        def field_failure(facts: Facts) -> str:
            if name not in facts:
                return absent
            return f"{name} {_show(facts[name])} {expected}"

        return field_failure
    names = sorted(_fields(node))

    def term_failure(facts: Facts) -> str:
        values = ", ".join(f"{n}={_show(facts[n])}" if n in facts else f"{n} absent" for n in names)
        return f"{text} does not hold" + (f" ({values})" if values else "")

    return term_failure


def _fact_name(node: Node) -> str | None:
    """The facts key a field or a days_since_outcome() call reads."""
    if isinstance(node, Field):
        return node.name
    if isinstance(node, Call) and node.function in HISTORY_FUNCTIONS:
        return render(node)
    return None


def _fields(node: Node) -> set[str]:
    if isinstance(node, Field):
        return {node.name}
    if isinstance(node, Call) and node.function in HISTORY_FUNCTIONS:
        return {render(node)}
    if isinstance(node, Literal):
        return set()
    if isinstance(node, Call | Logic):
        parts: Sequence[Node] = node.args if isinstance(node, Call) else node.operands
        return set().union(*(_fields(p) for p in parts))
    if isinstance(node, Neg | Not):
        return _fields(node.operand)
    if isinstance(node, Member):
        return _fields(node.left)
    return _fields(node.left) | _fields(node.right)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
