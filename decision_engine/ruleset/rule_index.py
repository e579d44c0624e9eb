"""Index rules so that a request only evaluates its candidates.

The index turns every top-level `and` term of the form `field <op> literal`,
`field in [...]` or `exists(field)` into bitmasks over the rules: per request
each indexed (field, operator) family costs one dict lookup or one bisect, and
the AND of the masks leaves the candidates. Only their remaining terms are evaluated.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from typing import Any

from decision_engine.ruleset.closures import compile_all, compile_checks
from decision_engine.ruleset.expr import (
    Call,
    Compare,
    Field,
    Literal,
    Member,
    Node,
    Not,
    conjuncts,
    render,
)
from decision_engine.ruleset.runtime import Checks, Facts, Fn, first_failure, set_bits

_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


class _Family:
    """Rules constraining one field in one way; `mask(value)` = rules this value lets through."""

    field: str
    free: int
    """Rules of the index that this family does not constrain."""

    def mask(self, value: Any) -> int:
        raise NotImplementedError


class _Categorical(_Family):
    def __init__(self, field: str) -> None:
        self.field = field
        self.free = 0
        self.accept: dict[Any, int] = {}
        self.excluders = 0
        self.exclude: dict[Any, int] = {}

    def add(self, bit: int, values: frozenset[Any], negated: bool) -> None:
        table = self.exclude if negated else self.accept
        if negated:
            self.excluders |= bit
        for value in values:
            table[value] = table.get(value, 0) | bit

    def mask(self, value: Any) -> int:
        if value is None:
            return self.free
        return (
            self.free | self.accept.get(value, 0) | (self.excluders & ~self.exclude.get(value, 0))
        )


class _Threshold(_Family):
    def __init__(self, field: str, op: str) -> None:
        self.field = field
        self.op = op
        self.free = 0
        self.entries: list[tuple[float, int]] = []
        self.thresholds: list[float] = []
        self.cumulative: list[int] = []

    def add(self, bit: int, threshold: float) -> None:
        self.entries.append((threshold, bit))

    def seal(self) -> None:
        # One mask per distinct threshold, not per rule: rules share thresholds, and
        # each mask is as wide as the ruleset (1.25 KB at 10,000 offers).
        by_threshold: dict[float, int] = {}
        for threshold, bit in self.entries:
            by_threshold[threshold] = by_threshold.get(threshold, 0) | bit
        self.entries = []
        self.thresholds = sorted(by_threshold)
        masks = [by_threshold[t] for t in self.thresholds]
        acc, running = [0], 0
        if self.op in (">", ">="):
            # value > t holds for the first k thresholds: prefix masks
            for bit in masks:
                running |= bit
                acc.append(running)
        else:
            # value < t holds for thresholds from k on: suffix masks
            acc = [0] * (len(masks) + 1)
            for i in range(len(masks) - 1, -1, -1):
                running |= masks[i]
                acc[i] = running
        self.cumulative = acc

    def mask(self, value: Any) -> int:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return self.free
        if self.op == ">":
            k = bisect_left(self.thresholds, value)
        elif self.op == ">=" or self.op == "<":
            k = bisect_right(self.thresholds, value)
        else:
            k = bisect_left(self.thresholds, value)
        return self.free | self.cumulative[k]


class _Exists(_Family):
    def __init__(self, field: str, present: bool) -> None:
        self.field = field
        self.present = present
        self.free = 0
        self.members = 0

    def mask(self, value: Any) -> int:
        return self.free | (self.members if (value is not None) == self.present else 0)


def index_term(term: Node) -> tuple[tuple[str, str], Any] | None:
    """(family key, payload) for a term the index can decide, else None."""
    if isinstance(term, Compare):
        left, right, op = term.left, term.right, term.op
        if isinstance(left, Literal) and isinstance(right, Field):
            left, right, op = right, left, _FLIP[op]
        if not (isinstance(left, Field) and isinstance(right, Literal)):
            return None
        if op in ("==", "!="):
            return (left.name, "cat"), (frozenset({right.value}), op == "!=")
        if isinstance(right.value, float):
            return (left.name, op), right.value
        return None
    if isinstance(term, Member) and isinstance(term.left, Field):
        return (term.left.name, "cat"), (frozenset(i.value for i in term.items), term.negated)
    # exists(days_since_outcome(...)) is not indexed: its value is not a field.
    if isinstance(term, Call) and term.function == "exists" and isinstance(term.args[0], Field):
        return (term.args[0].name, "exists+"), None
    negated_call = term.operand if isinstance(term, Not) else None
    if (
        isinstance(negated_call, Call)
        and negated_call.function == "exists"
        and isinstance(negated_call.args[0], Field)
    ):
        return (negated_call.args[0].name, "exists-"), None
    if isinstance(term, Field):
        return (term.name, "cat"), (frozenset({True}), False)
    return None


class RuleIndex:
    """Rules in bit order; `matches` yields, in that order, the ones whose condition is True."""

    def __init__(
        self, rules: Sequence[Sequence[Node]], explain_order: Sequence[int] | None = None
    ) -> None:
        """`explain_order`: the rules' positions in the order `failures` lists them (bit
        order by default)."""
        self.size = len(rules)
        self.all = (1 << self.size) - 1
        families: dict[tuple[str, str], _Family] = {}
        members: dict[tuple[str, str], int] = {}
        residuals: list[Fn | None] = []
        for i, terms in enumerate(rules):
            bit = 1 << i
            residual: list[Node] = []
            for term in (t for cond in terms for t in conjuncts(cond)):
                found = index_term(term)
                if found is None or members.get(found[0], 0) & bit:
                    residual.append(term)
                    continue
                key, payload = found
                family = families.get(key)
                if family is None:
                    family = families[key] = _new_family(key)
                members[key] = members.get(key, 0) | bit
                if isinstance(family, _Categorical):
                    family.add(bit, *payload)
                elif isinstance(family, _Threshold):
                    family.add(bit, payload)
                elif isinstance(family, _Exists):
                    family.members |= bit
            residuals.append(compile_all(residual))
        for key, family in families.items():
            family.free = self.all & ~members[key]
            if isinstance(family, _Threshold):
                family.seal()
        # Families that exclude the most rules first, so the AND empties early.
        self.families = sorted(families.values(), key=lambda f: f.free.bit_count())
        self.residuals = tuple(residuals)
        # Explanations are compiled when first asked for: at 10,000 offers they were
        # half the compile time and ~36 MiB, for explain=True and rule tests only.
        self._rules = [tuple(terms) for terms in rules]
        self._explain_order = tuple(range(self.size) if explain_order is None else explain_order)
        self._explainer: _Explainer | None = None

    def candidates(self, facts: Facts) -> int:
        mask = self.all
        for family in self.families:
            mask &= family.mask(facts.get(family.field))
            if not mask:
                break
        return mask

    def matches(self, facts: Facts) -> Iterator[int]:
        residuals = self.residuals
        for i in set_bits(self.candidates(facts)):
            residual = residuals[i]
            if residual is None or residual(facts) is True:
                yield i

    def explain(self, i: int, facts: Facts) -> str | None:
        """Why rule i does not apply (None when it does)."""
        return self.explainer().explain(i, facts)

    def failures(self, facts: Facts) -> list[str | None]:
        """Why each rule does not apply (None where it does), in `explain_order`."""
        return self.explainer().failures(facts)

    def explainer(self) -> _Explainer:
        if self._explainer is None:
            self._explainer = _Explainer(self._rules, self._explain_order)
        return self._explainer


class _Explainer:
    """Each rule's terms as ids of the distinct terms of all rules.

    A ruleset repeats its terms (1,000 generated offers: 3,128 terms, 159 distinct),
    so explaining every rule evaluates and describes each distinct term once.
    """

    def __init__(self, rules: Sequence[Sequence[Node]], order: Sequence[int]) -> None:
        ids: dict[str, int] = {}
        terms: list[Node] = []
        rows: list[tuple[int, ...]] = []
        for rule in rules:
            row: list[int] = []
            for term in (t for cond in rule for t in conjuncts(cond)):
                key = render(term)
                if key not in ids:
                    ids[key] = len(terms)
                    terms.append(term)
                row.append(ids[key])
            rows.append(tuple(row))
        self.rows = rows
        self.listed = [rows[i] for i in order]
        """The rows in the order `failures` lists them."""
        self.checks: Checks = compile_checks(terms)

    def explain(self, i: int, facts: Facts) -> str | None:
        return first_failure(tuple(self.checks[term] for term in self.rows[i]), facts)

    def failures(self, facts: Facts) -> list[str | None]:
        failed = [None if test(facts) is True else why(facts) for test, why in self.checks]
        out: list[str | None] = []
        for row in self.listed:
            failure = None
            for term in row:
                if (failure := failed[term]) is not None:
                    break
            out.append(failure)
        return out


def _new_family(key: tuple[str, str]) -> _Family:
    name, kind = key
    if kind == "cat":
        return _Categorical(name)
    if kind.startswith("exists"):
        return _Exists(name, kind == "exists+")
    return _Threshold(name, kind)
