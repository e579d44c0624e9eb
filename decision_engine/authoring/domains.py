"""What the top-level `and` terms of a condition say about one field: a value lattice
(numeric intervals, sets of values, presence) that `rules check` reasons with.

A term `index_term` cannot classify is unknown, and stays unknown: the checker warns
only about what is provably true.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from decision_engine.ruleset.expr import Node, Not
from decision_engine.ruleset.rule_index import index_term
from decision_engine.ruleset.schema import FieldSpec

Scalar = float | str | bool
Atom = tuple[tuple[str, str], Any]
"""A term as `index_term` classifies it: ((field, family), payload)."""

_COMPLEMENT = {
    "<": ">=",
    "<=": ">",
    ">": "<=",
    ">=": "<",
    "exists+": "exists-",
    "exists-": "exists+",
}


@dataclass(frozen=True, slots=True)
class _Bound:
    value: float
    inclusive: bool


@dataclass(frozen=True, slots=True)
class Domain:
    """The values of one field for which a set of terms can all be true.

    Every comparison needs a value (a comparison with an absent field is unknown,
    never true), so any value constraint comes with `present=True`.
    """

    present: bool | None = None
    """True: must have a value; False: must be absent; None: either."""
    conflict: bool = False
    """Required both present and absent."""
    allowed: frozenset[Scalar] | None = None
    """The only values let through (None: no such list)."""
    excluded: frozenset[Scalar] = frozenset()
    low: _Bound | None = None
    high: _Bound | None = None

    def meet(self, other: Domain) -> Domain:
        """What both let through."""
        present = self.present if other.present is None else other.present
        conflict = self.conflict or other.conflict
        if self.present is not None and other.present is not None:
            conflict = conflict or self.present != other.present
        allowed = self.allowed
        if other.allowed is not None:
            allowed = other.allowed if allowed is None else allowed & other.allowed
        return Domain(
            present=present,
            conflict=conflict,
            allowed=allowed,
            excluded=self.excluded | other.excluded,
            low=_tighter(self.low, other.low, higher=True),
            high=_tighter(self.high, other.high, higher=False),
        )


ANY = Domain()


def _tighter(a: _Bound | None, b: _Bound | None, *, higher: bool) -> _Bound | None:
    if a is None or b is None:
        return a or b
    if a.value != b.value:
        return a if (a.value > b.value) == higher else b
    return a if not a.inclusive else b


def atom_of(term: Node) -> Atom | None:
    """The term as a single-field constraint, or None when we cannot reason about it."""
    found = index_term(term)
    if found is not None:
        return found
    # `not t` is true exactly when t is false, which for a field term means the field
    # has a value outside t's set: the complement, still requiring a value.
    if isinstance(term, Not):
        inner = atom_of(term.operand)
        return None if inner is None else negate(inner)
    return None


def negate(atom: Atom) -> Atom:
    """The atom that holds when `atom` is false (not merely unknown)."""
    (name, family), payload = atom
    if family == "cat":
        values, negated = payload
        return (name, family), (values, not negated)
    return (name, _COMPLEMENT[family]), payload


def domain_of(atom: Atom) -> Domain:
    (_, family), payload = atom
    if family == "cat":
        values, negated = payload
        if negated:
            return Domain(present=True, excluded=frozenset(values))
        return Domain(present=True, allowed=frozenset(values))
    if family.startswith("exists"):
        return Domain(present=family == "exists+")
    bound = _Bound(float(payload), "=" in family)
    return Domain(present=True, low=bound) if ">" in family else Domain(present=True, high=bound)


def is_empty(domain: Domain, spec: FieldSpec, *, use_range: bool = True) -> bool:
    """No value (nor absence) of the field satisfies `domain`."""
    if domain.conflict:
        return True
    if domain.present is not True:
        return False  # absence, or any value at all, is left
    candidates = _finite_values(domain, spec)
    if candidates is not None:
        return not any(_admits(domain, spec, v, use_range=use_range) for v in candidates)
    if spec.kind in ("number", "integer"):
        return _interval_empty(domain, spec, use_range=use_range)
    return False  # free text: infinitely many values, finitely many excluded


def _finite_values(domain: Domain, spec: FieldSpec) -> Iterable[Scalar] | None:
    if domain.allowed is not None:
        return domain.allowed
    if spec.kind == "enum":
        return spec.values
    if spec.kind == "bool":
        return (True, False)
    return None


def _admits(domain: Domain, spec: FieldSpec, value: Scalar, *, use_range: bool) -> bool:
    if value in domain.excluded:
        return False
    if domain.allowed is not None and value not in domain.allowed:
        return False
    if spec.kind == "enum" and value not in spec.values:
        return False
    if not isinstance(value, float):
        return True
    if spec.kind == "integer" and not value.is_integer():
        return False
    low, high = _interval(domain, spec, use_range=use_range)
    return _above(value, low) and _below(value, high)


def _above(value: float, low: _Bound | None) -> bool:
    return low is None or value > low.value or (low.inclusive and value == low.value)


def _below(value: float, high: _Bound | None) -> bool:
    return high is None or value < high.value or (high.inclusive and value == high.value)


def _interval(
    domain: Domain, spec: FieldSpec, *, use_range: bool
) -> tuple[_Bound | None, _Bound | None]:
    low, high = domain.low, domain.high
    if use_range:
        if spec.minimum is not None:
            low = _tighter(low, _Bound(spec.minimum, True), higher=True)
        if spec.maximum is not None:
            high = _tighter(high, _Bound(spec.maximum, True), higher=False)
    if spec.kind == "integer":
        # Whole numbers only: `> 2` is `>= 3`, `< 2.5` is `<= 2`.
        if low is not None:
            low = _Bound(
                math.floor(low.value) + 1 if not low.inclusive else math.ceil(low.value), True
            )
        if high is not None:
            high = _Bound(
                math.ceil(high.value) - 1 if not high.inclusive else math.floor(high.value), True
            )
    return low, high


def _interval_empty(domain: Domain, spec: FieldSpec, *, use_range: bool) -> bool:
    low, high = _interval(domain, spec, use_range=use_range)
    if low is None or high is None:
        return False
    if low.value > high.value:
        return True
    if low.value == high.value:
        return not (low.inclusive and high.inclusive) or low.value in domain.excluded
    # A bounded run of whole numbers can be excluded value by value (`!=` terms).
    if spec.kind == "integer" and high.value - low.value < len(domain.excluded):
        run = range(int(low.value), int(high.value) + 1)
        return all(float(v) in domain.excluded for v in run)
    return False
