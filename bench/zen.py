"""Side by side with GoRules zen-engine (Rust core) on the same eligibility rules.

    python -m bench.zen [--sizes 100,1000,10000] [--inputs 2000]

The benchmark's synthetic offers become one zen decision table (hit policy `collect`),
written the way a zen user would: a column per field with unary tests (`>= 1000`,
`"gold", "silver"`, `[0..30]`), and a boolean-expression column for a term
over several fields. Both engines get the same inputs; for every input both must find
the same eligible offers, or the run stops. Then, rounds taking turns in one process:

- zen: `ZenDecision.evaluate`, the fastest of its Python APIs here (the decision made
  once, the input a dict of the fields the table reads);
- this project: the full eligible set (index + residual conditions), and `decide()`
  on the production paths (top 3; learned; exploring).

zen-engine is the `bench` extra (`pip install -e '.[bench]'`), not a dependency.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import micro
from bench.gen_rules import demo_schema_values, write_ruleset
from decision_engine.decide.engine import decide
from decision_engine.decide.facts import build_facts
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.ruleset.expr import (
    Call,
    Compare,
    Field,
    Literal,
    Logic,
    Member,
    Node,
    conjuncts,
)
from decision_engine.ruleset.runtime import TODAY

COMPLAINT_DAYS = "days_since_last_complaint"
"""days_since(last_complaint), given to zen as a field (it has no dates of ours)."""


def _literal(node: Literal) -> str:
    return json.dumps(node.value) if isinstance(node.value, str) else repr(node.value)


def _zen(node: Node) -> str:
    """A condition in zen's expression language."""
    if isinstance(node, Logic):
        return f" {node.op} ".join(f"({_zen(o)})" for o in node.operands)
    if isinstance(node, Compare):
        return f"{_zen(node.left)} {node.op} {_zen(node.right)}"
    if isinstance(node, Member):
        items = ", ".join(_literal(i) for i in node.items)
        test = f"{_zen(node.left)} in [{items}]"
        return f"not ({test})" if node.negated else test
    if isinstance(node, Field):
        return node.name
    if isinstance(node, Literal):
        return _literal(node)
    if isinstance(node, Call) and node.function == "days_since":
        return COMPLAINT_DAYS
    raise ValueError(f"no zen form for {node!r}")


def _unary(term: Node) -> tuple[str, str] | None:
    """(field, unary test) for a term on one field, else None."""
    if (
        isinstance(term, Compare)
        and isinstance(term.left, Field)
        and isinstance(term.right, Literal)
    ):
        value = _literal(term.right)
        return term.left.name, value if term.op == "==" else f"{term.op} {value}"
    if isinstance(term, Member) and isinstance(term.left, Field) and not term.negated:
        return term.left.name, ", ".join(_literal(i) for i in term.items)
    return None


def _cell(tests: list[str]) -> str:
    """One column's tests of a rule, together: an interval for a low and a high bound."""
    if len(tests) == 1:
        return tests[0]
    lows = [t for t in tests if t.startswith(">")]
    highs = [t for t in tests if t.startswith("<")]
    if len(tests) == 2 and len(lows) == 1 and len(highs) == 1:
        low, high = lows[0], highs[0]
        left = "[" if low.startswith(">=") else "("
        right = "]" if high.startswith("<=") else ")"
        return f"{left}{low.lstrip('>=').strip()}..{high.lstrip('<=').strip()}{right}"
    return " and ".join(f"$ {t}" if t[0] in "<>!" else f"$ == {t}" for t in tests)


def decision_table(ruleset: CompiledRuleset) -> dict[str, Any]:
    """The offers' eligibility (conditions and channels) as one zen decision."""
    columns: dict[str, str] = {}  # column field -> column id
    rows = []
    for offer in ruleset.offers:
        spec = offer.spec
        cells: dict[str, list[str]] = {}
        for term in (t for c in spec.when for t in conjuncts(c.node)):
            unary = _unary(term)
            field, test = unary if unary is not None else (_zen(term), "true")
            cells.setdefault(field, []).append(test)
        cells["channel"] = [", ".join(json.dumps(c) for c in sorted(spec.channels))]
        row: dict[str, str] = {"_id": spec.id, "offer": json.dumps(spec.id)}
        for field, tests in cells.items():
            column = columns.setdefault(field, f"c{len(columns)}")
            row[column] = _cell(tests)
        rows.append(row)
    for row in rows:
        for column in columns.values():
            row.setdefault(column, "")
    inputs = [{"id": c, "type": "expression", "field": f, "name": f} for f, c in columns.items()]
    table = {
        "hitPolicy": "collect",
        "inputs": inputs,
        "outputs": [{"id": "offer", "type": "expression", "field": "offer", "name": "offer"}],
        "rules": rows,
    }
    return {
        "contentType": "application/vnd.gorules.decision",
        "nodes": [
            {"id": "in", "type": "inputNode", "name": "Request", "position": {"x": 0, "y": 0}},
            {"id": "offers", "type": "decisionTableNode", "name": "Offers",
             "position": {"x": 1, "y": 0}, "content": table},
            {"id": "out", "type": "outputNode", "name": "Response", "position": {"x": 2, "y": 0}},
        ],
        "edges": [
            {"id": "e1", "type": "edge", "sourceId": "in", "targetId": "offers"},
            {"id": "e2", "type": "edge", "sourceId": "offers", "targetId": "out"},
        ],
    }  # fmt: skip


def zen_input(facts: dict[str, Any]) -> dict[str, Any]:
    """The fields the table reads, from our typed facts (absent stays absent)."""
    data = {k: v for k, v in facts.items() if isinstance(v, str | int | float) and k != TODAY}
    complaint = facts.get("last_complaint")
    if complaint is not None:
        data[COMPLAINT_DAYS] = facts[TODAY] - complaint
    return data


def timed(fn: Callable[[int], object], count: int) -> float:
    """µs per call of fn(0..count-1), by CPU time."""
    start = time.process_time()
    for n in range(count):
        fn(n)
    return (time.process_time() - start) / count * 1e6


def compare(offers: int, inputs: int, rounds: int, work: Path) -> dict[str, Any]:
    import zen

    directory = work / str(offers)
    write_ruleset(directory, offers=offers, routes=max(5, offers // 10))
    ruleset = load_compiled(directory)
    cases = micro.population(inputs, demo_schema_values()[0])
    facts = [build_facts(ruleset, s, c, now=micro.NOW) for s, c in cases]
    start = time.perf_counter()
    decision = zen.ZenEngine().create_decision(json.dumps(decision_table(ruleset)))
    zen_load_s = time.perf_counter() - start
    given = [zen_input(f) for f in facts]
    ids = [o.spec.id for o in ruleset.offers]
    for n, f in enumerate(facts):
        ours = {ids[i] for i in ruleset.offer_index.matches(f)}
        theirs = {row["offer"] for row in decision.evaluate(given[n])["result"]}
        if ours != theirs:
            raise SystemExit(
                f"{offers} offers, input {n}: eligible sets differ: only ours "
                f"{sorted(ours - theirs)[:5]}, only zen's {sorted(theirs - ours)[:5]}"
            )
    learned = micro.learned_state(ruleset)
    runs: dict[str, Callable[[int], object]] = {
        "zen-engine": lambda n: decision.evaluate(given[n]),
        "eligible set": lambda n: list(ruleset.offer_index.matches(facts[n])),
        "decide()": lambda n: decide(ruleset, state=cases[n][0], context=cases[n][1],
                                     now=micro.NOW, decision_id="d"),
        "decide(), learned": lambda n: decide(ruleset, state=cases[n][0], context=cases[n][1],
                                              now=micro.NOW, decision_id="d", learned=learned),
        "decide(), exploring": lambda n: decide(
            ruleset, state=cases[n][0], context=cases[n][1], now=micro.NOW, decision_id="d",
            learned=learned, sample_seed=n),
    }  # fmt: skip
    measured: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            measured[name].append(timed(fn, inputs))
    us = {name: round(statistics.median(v), 1) for name, v in measured.items()}
    return {
        "offers": offers,
        "inputs": inputs,
        "identical_eligible_sets": inputs,
        "eligible_per_input": round(
            sum(len(list(ruleset.offer_index.matches(f))) for f in facts) / inputs, 1
        ),
        "zen_create_decision_s": round(zen_load_s, 2),
        "cpu_us": us,
        "cpu_us_rounds": measured,
        "decide_over_zen": round(us["decide()"] / us["zen-engine"], 3),
    }


def run(sizes: tuple[int, ...], inputs: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-zen-") as tmp:
        for offers in sizes:
            row = compare(offers, inputs, rounds, Path(tmp))
            rows.append(row)
            print(f"  {offers:>6} offers, {row['inputs']} inputs, eligible sets identical: "
                  + ", ".join(f"{k} {v:,.1f}" for k, v in row["cpu_us"].items())
                  + " µs", flush=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--inputs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(","))
    print(json.dumps(run(sizes, args.inputs, args.rounds), indent=2))


if __name__ == "__main__":
    main()
