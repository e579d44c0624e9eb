"""The evaluator's targets and table: pure decide() by ruleset size and path, the cost of
loading a ruleset, explanations, and zen-engine side by side (bench/micro.py,
bench/zen.py)."""

from __future__ import annotations

import itertools
from typing import Any

from bench.micro import PATHS

EVAL_US_AT_1000 = 30.0
EVAL_US_AT_10000 = 100.0
LOAD_S_AT_10000 = 2.0
LOAD_MIB_AT_10000 = 60.0
EXPLAIN_FACTOR = 10.0


def _row(micro: dict[str, Any], offers: int) -> dict[str, Any] | None:
    return next((r for r in micro["by_rules"] if r["offers"] == offers), None)


def eval_targets(micro: dict[str, Any], zen: list[dict[str, Any]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for offers, limit in ((1000, EVAL_US_AT_1000), (10_000, EVAL_US_AT_10000)):
        row = _row(micro, offers)
        if row is None:
            continue
        values = {p: row["paths"][p]["us_per_decision"] for p in PATHS}
        out[f"eval_us_at_{offers}"] = {
            "target": f"<= {limit:g} µs on every path ({', '.join(PATHS)})",
            "value": values,
            "met": all(v <= limit for v in values.values()),
        }
    big = _row(micro, 10_000)
    if big is not None:
        out["load_compile_at_10000"] = {
            "target": f"<= {LOAD_S_AT_10000:g} s and <= {LOAD_MIB_AT_10000:g} MiB",
            "value": f"{big['load_compile_s']} s, +{big['load_compile_mib']} MiB resident "
            f"(the compiled ruleset keeps {big['ruleset_mib']} MiB)",
            "met": big["load_compile_s"] <= LOAD_S_AT_10000
            and big["load_compile_mib"] <= LOAD_MIB_AT_10000,
        }
    rows = micro["by_rules"]
    steps = [
        (b["us_per_decision"] / a["us_per_decision"], b["rules"] / a["rules"])
        for a, b in itertools.pairwise(rows)
    ]
    out["eval_sublinear"] = {
        "target": "time grows slower than rule count at every step",
        "value": [f"x{t:.2f} time for x{r:.1f} rules" for t, r in steps],
        "met": all(t < r for t, r in steps),
    }
    ex = micro.get("explain_1000")
    if ex is not None:
        out["explain_at_1000"] = {
            "target": f"explain=True <= {EXPLAIN_FACTOR:g}x a plain decision",
            "value": f"x{ex['explain_factor']}",
            "met": ex["explain_factor"] <= EXPLAIN_FACTOR,
        }
    if zen:
        out["faster_than_zen"] = {
            "target": "decide() (top 3) faster than zen-engine's eligibility at every size",
            "value": {r["offers"]: f"x{r['decide_over_zen']}" for r in zen},
            "met": all(r["decide_over_zen"] < 1 for r in zen),
        }
    return out


def report(micro: dict[str, Any], zen: list[dict[str, Any]] | None) -> None:
    print("\n== decide() evaluation (pure, no I/O), µs per decision by path ==")
    head = "".join(f" {p:>10}" for p in PATHS)
    print(f"{'offers':>7} {'rules':>6}{head} {'load s':>7} {'+MiB':>5} {'keeps':>6} "
          f"{'candidates':>10} {'eligible':>8}")  # fmt: skip
    for r in micro["by_rules"]:
        cells = "".join(f" {r['paths'][p]['us_per_decision']:>10.1f}" for p in PATHS)
        load = f"{r['load_compile_s']:>7.2f} {r['load_compile_mib']:>5.0f} {r['ruleset_mib']:>6.1f}"
        found = f"{r['candidates_per_decision']:>10.1f} {r['eligible_per_decision']:>8.1f}"
        print(f"{r['offers']:>7} {r['rules']:>6}{cells} {load} {found}")
    ex = micro.get("explain_1000")
    if ex is not None:
        print(f"explain at 1000 offers: {ex['us_per_decision_explain']:,.0f} µs vs "
              f"{ex['us_per_decision']:,.1f} µs (x{ex['explain_factor']})")  # fmt: skip
    if zen:
        names = list(zen[0]["cpu_us"])
        print("\n== beside zen-engine: CPU µs per evaluation, same rules and inputs ==")
        print(f"{'offers':>7}" + "".join(f" {n:>20}" for n in names) + "  eligible sets")
        for r in zen:
            cells = "".join(f" {r['cpu_us'][n]:>20,.1f}" for n in names)
            print(f"{r['offers']:>7}{cells}  identical for {r['identical_eligible_sets']:,}")
