"""A step's `where` (a checked condition over one event's fields) as a durable_rules test.

The loader admits only what maps one to one (ruleset/moment_pattern.py): a comparison
of a field with a value, `in` / `not in`, `exists`, `and`, `or`. An absent field fails
every test here, as an unknown value makes a condition not true everywhere else.
"""

from __future__ import annotations

from typing import Any

from decision_engine.ruleset.expr import Call, Compare, Field, Literal, Logic, Member, Node, Not

Test = dict[str, Any]
"""One durable_rules expression: {"field": value}, {"$lt": {"field": value}}, {"$and": [...]}."""

_OPERATORS = {"!=": "$neq", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


class UnsupportedWhere(ValueError):
    """A `where` the loader should have refused: a bug, not a user error."""


def durable_test(node: Node) -> Test:
    """The durable_rules test that holds exactly when `node` is true for an event."""
    if isinstance(node, Logic):
        return {f"${node.op}": [durable_test(o) for o in node.operands]}
    if isinstance(node, Compare):
        op, field, literal = node.op, node.left, node.right
        if isinstance(field, Literal):
            op, field, literal = _FLIPPED[op], literal, field
        if not isinstance(field, Field) or not isinstance(literal, Literal):
            raise UnsupportedWhere(f"compare a field with a value, got {node}")
        return _compare(op, field.name, literal.value)
    if isinstance(node, Member) and isinstance(node.left, Field):
        name = node.left.name
        tests = [_compare("!=" if node.negated else "==", name, i.value) for i in node.items]
        if len(tests) == 1:
            return tests[0]
        return {"$and": tests} if node.negated else {"$or": tests}
    if isinstance(node, Call) and node.function == "exists" and isinstance(node.args[0], Field):
        return {"$ex": {node.args[0].name: 1}}
    if isinstance(node, Not) and isinstance(node.operand, Call):
        inner = durable_test(node.operand)
        return {"$nex": inner["$ex"]}
    raise UnsupportedWhere(f"not a durable_rules test: {node}")


def _compare(op: str, name: str, value: float | str | bool) -> Test:
    if op == "==":
        return {name: value}
    return {_OPERATORS[op]: {name: value}}


def conjuncts(test: Test) -> list[Test]:
    """The parts of a top-level `$and` (so a step is one flat chain of alpha nodes)."""
    if set(test) == {"$and"}:
        return [part for item in test["$and"] for part in conjuncts(item)]
    return [test]
