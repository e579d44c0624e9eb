"""durable_rules' C limits, checked on the moments before anything goes live.

Exceeding one of these fails (an error code) or corrupts memory (a crash) at run time,
in the middle of a call, so each is bounded from above, conservatively, from the
compiled rules (definitions.py), and a moments file that could exceed one is refused
with the moment's file:line and the reason:

  alpha stack      64 entries: the alpha nodes one fact may push while it is matched
                   (error 303). Bound: per event kind, every test of every step waiting
                   for that kind, as if none were shared; an `or` counts its disjuncts
                   and the node they meet in, and multiplies the tests after it.
  node children    512 per node (error 106), 256 join nodes per node (108), 128
                   `not exists` per node (107). Bound: per kind, the steps (and `or`
                   branches) waiting for it.
  properties       255 per fact (error 302): a fact carries 6 fixed ones and the fields
                   that steps test.
  expressions      32 per step (error 113): each `and`/`or` takes two, each reference
                   to an earlier fact (`seq > e0.seq`) one.
  frame            16 facts per match: the steps of a rule that bind a fact.
  rules            4,096 per ruleset (error 106).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from decision_engine.errors import Problem
from decision_engine.moments.conditions import Test
from decision_engine.moments.definitions import DEADLINE, MomentProgram, StepPlan

ALPHA_STACK = 64
NODE_CHILDREN = 512
JOINS_PER_NODE = 256
NOT_EXISTS_PER_NODE = 128
FACT_PROPERTIES = 254
"""A fact with 255 properties is refused (measured: 254 pass)."""
FIXED_PROPERTIES = 6
"""sid, id, kind, seq, t and says."""
STEP_EXPRESSIONS = 31
"""The 32nd expression of a step fails (MAX_SEQUENCE_EXPRESSIONS)."""
FRAME_FACTS = 16
RULES = 4096

SESSION_BASE_BYTES = 75_000
STEP_SESSION_BYTES = 11_200
"""Measured: C memory of one live session, plus per join node (step) of the ruleset."""


def limit_problems(program: MomentProgram) -> list[Problem]:
    """Every limit the moments could exceed, at the moment that makes it so."""
    problems: list[Problem] = []
    moments = program.moments
    if len(program.rules) > RULES:
        where = moments[program.rules[RULES].moment].where
        problems.append(
            Problem(
                where,
                f"{len(program.rules)} durable_rules rules from {len(moments)} "
                f"moments; one ruleset holds at most {RULES}",
            )
        )
    per_kind: dict[str, list[tuple[int, StepPlan]]] = defaultdict(list)
    for rule in program.rules:
        bound = [s for s in rule.steps if not s.negated and s.kind != DEADLINE]
        if len(bound) > FRAME_FACTS:
            problems.append(
                Problem(
                    moments[rule.moment].where,
                    f"moment {moments[rule.moment].id} joins "
                    f"{len(bound)} events; durable_rules joins at most {FRAME_FACTS}",
                )
            )
        for step in rule.steps:
            per_kind[step.kind].append((rule.moment, step))
            used = expressions(step.test)
            if used > STEP_EXPRESSIONS:
                m = moments[rule.moment]
                problems.append(
                    Problem(
                        m.where,
                        f"moment {m.id}: one {step.kind} step needs {used} "
                        f"durable_rules expressions; at most {STEP_EXPRESSIONS} (fewer "
                        "`and`/`or` in its where)",
                    )
                )
    for kind, steps in per_kind.items():
        problems += _per_kind(program, kind, steps)
    for kind, fields in program.carried.items():
        count = FIXED_PROPERTIES + len(fields)
        if count > FACT_PROPERTIES:
            first = next(m for m in moments if any(s.kind == kind for s in m.pattern.steps))
            problems.append(
                Problem(
                    first.where,
                    f"{kind} facts would carry {count} properties; "
                    f"durable_rules takes at most {FACT_PROPERTIES}",
                )
            )
    return problems


def _per_kind(
    program: MomentProgram, kind: str, steps: list[tuple[int, StepPlan]]
) -> list[Problem]:
    """The node bounds of one kind, reported at the first moment that passes one."""
    moments = program.moments
    budgets = (
        ("alpha nodes on durable_rules' matching stack (error 303)", ALPHA_STACK, pushes, 1),
        ("branches under one node (error 106)", NODE_CHILDREN, branches, 0),
        ("join nodes under one node (error 108)", JOINS_PER_NODE, lambda t: 1, 0),
        ("`not exists` tests under one node (error 107)", NOT_EXISTS_PER_NODE, not_exists, 0),
    )
    problems = []
    for what, limit, cost, base in budgets:
        total = base
        by_moment: dict[int, int] = defaultdict(int)
        for moment, step in steps:
            used = cost(step.test)
            total += used
            by_moment[moment] += used
            if total > limit:
                m = moments[moment]
                costs = ", ".join(f"{moments[i].id} {n}" for i, n in by_moment.items())
                problems.append(
                    Problem(
                        m.where,
                        f"moment {m.id}: one {kind} event could need {total} {what}"
                        f", more than durable_rules' {limit}; the moments waiting for {kind} "
                        f"events use {costs}: merge some, or give them fewer tests",
                    )
                )
                break
    return problems


def pushes(test: Test) -> int:
    """Upper bound of the alpha nodes a fact pushes while this test chain is matched."""
    if "$and" in test:
        total, times = 0, 1
        for part in test["$and"]:
            total += times * pushes(part)
            if "$or" in part:
                times *= len(part["$or"])  # the rest of the chain runs once per disjunct
        return total
    if "$or" in test:
        return sum(pushes(p) for p in test["$or"]) + len(test["$or"])
    return 1


def branches(test: Test) -> int:
    """How many alpha paths the chain has (its `or`s multiply them)."""
    if "$and" in test:
        product = 1
        for part in test["$and"]:
            product *= branches(part)
        return product
    if "$or" in test:
        return sum(branches(p) for p in test["$or"])
    return 1


def not_exists(test: Test) -> int:
    parts: Iterable[Test] = test.get("$and") or test.get("$or") or ()
    own = 1 if "$nex" in test else 0
    return own + sum(not_exists(p) for p in parts)


def expressions(test: Test) -> int:
    """Entries of durable_rules' expression sequence for one step (see module docstring)."""
    for op in ("$and", "$or"):
        if op in test:
            return 2 + sum(expressions(p) for p in test[op])
    (value,) = test.values()
    if isinstance(value, dict):
        (right,) = value.values()
        return 1 if isinstance(right, dict) else 0
    return 0


def session_bytes(program: MomentProgram) -> int:
    """About how much C memory one live interaction takes in durable_rules (measured)."""
    joins = sum(len(rule.steps) for rule in program.rules)
    return SESSION_BASE_BYTES + STEP_SESSION_BYTES * joins
