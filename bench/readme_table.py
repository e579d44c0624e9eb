"""The README's benchmark table, made from bench/results/latest.json (never typed).

    python -m bench.readme_table [--check]

Rewrites the part of README.md between `<!-- bench:start -->` and `<!-- bench:end -->`;
`--check` only says whether it is current.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LATEST = ROOT / "bench" / "results" / "latest.json"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _us(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def render(results: dict[str, Any]) -> str:
    """Markdown: where the run was made, the evaluator, the server, and the targets."""
    m = results["machine"]
    lines = [
        f"One `make bench` run: commit {m['commit']}"
        + (" (with uncommitted changes)" if m.get("uncommitted_changes") else "")
        + f", {m['date']}, {m['nproc']} cores, load average at the start "
        + " / ".join(f"{x:.2f}" for x in m["loadavg_at_start"])
        + ".",
        "",
    ]
    micro = results.get("micro")
    if micro:
        paths = list(micro["by_rules"][0]["paths"])
        lines += [
            "| offers | " + " | ".join(f"`decide()` {p}, µs" for p in paths)
            + " | load + compile | resident memory grown (kept by the ruleset) |",
            "|---" * (len(paths) + 3) + "|",
        ]  # fmt: skip
        for r in micro["by_rules"]:
            cells = " | ".join(_us(r["paths"][p]["us_per_decision"]) for p in paths)
            lines.append(
                f"| {r['offers']:,} | {cells} | {r['load_compile_s']:.2f} s | "
                f"{r['load_compile_mib']:.0f} MiB ({r['ruleset_mib']:.0f} MiB) |"
            )
        ex = micro.get("explain_1000")
        if ex:
            lines += ["", f"`explain=True` at 1,000 offers: {ex['us_per_decision_explain']:,.0f} "
                      f"µs, ×{ex['explain_factor']} a plain decision's CPU time "
                      "(their rounds taking turns)."]  # fmt: skip
    refresh = (micro or {}).get("learning_refresh")
    if refresh:
        sizes = " | ".join(f"{r['offers']:,} offers" for r in refresh)
        lines += ["", f"| learning refresh, CPU ms per worker | {sizes} |"]
        lines.append("|---" * (len(refresh) + 1) + "|")
        rows = [("rebuilt from every key, with every plan (once a minute)", "rebuild_ms")]
        rows += [(f"updated: {n:,} keys changed", f"update_{n}_ms") for n in (10, 100, 1000)]
        for what, key in rows:
            lines.append(f"| {what} | " + " | ".join(f"{r[key]:,.2f}" for r in refresh) + " |")
    zen = results.get("zen")
    if zen:
        names = list(zen[0]["cpu_us"])
        lines += ["", "| CPU µs per evaluation | " + " | ".join(f"{r['offers']:,} offers"
                                                            for r in zen) + " |",
                  "|---" * (len(zen) + 1) + "|"]  # fmt: skip
        for name in names:
            lines.append(f"| {name} | " + " | ".join(_us(r["cpu_us"][name]) for r in zen) + " |")
        lines.append(
            "| eligible sets identical | "
            + " | ".join(f"{r['identical_eligible_sets']:,} of {r['inputs']:,}" for r in zen)
            + " |"
        )
    load = results.get("load")
    if load and "decide" in load and "ping" in load:
        lines += ["", "| server (2 workers) | Decide | Ping | ratio |", "|---|---|---|---|"]
        d, p = load["decide"], load["ping"]
        rows = [
            ("p50 at 1,000 req/s", d["fixed_rate"]["p50_ms"], p["fixed_rate"]["p50_ms"], "ms"),
            ("p99 at 1,000 req/s", d["fixed_rate"]["p99_ms"], p["fixed_rate"]["p99_ms"], "ms"),
            ("max throughput", d["max_throughput"]["rps"], p["max_throughput"]["rps"], "req/s"),
            ("server CPU per call at max", d["max_throughput"].get("server_cpu_us_per_req", 0),
             p["max_throughput"].get("server_cpu_us_per_req", 0), "µs"),
        ]  # fmt: skip
        for what, a, b, unit in rows:
            ratio = f"×{a / b:.2f}" if b else ""
            lines.append(f"| {what} | {a:,} {unit} | {b:,} {unit} | {ratio} |")
        spread = d.get("rounds")
        if spread:
            lines.append(f"| (medians of {spread} alternating rounds each) | | | |")
    targets = results.get("targets") or {}
    if targets:
        lines += ["", "| target | measured | |", "|---|---|---|"]
        for name, t in targets.items():
            value = t["value"]
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            elif isinstance(value, list):
                value = "; ".join(map(str, value))
            lines.append(
                f"| {name}: {t['target']} | {value} | {'met' if t['met'] else '**not met**'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = README.read_text()
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"README.md has no {START} ... {END} section")
    table = render(json.loads(LATEST.read_text()))
    new = f"{head}{START}\n{table}{END}{tail}"
    if args.check:
        raise SystemExit(0 if new == text else "README's benchmark table is not current")
    README.write_text(new)
    print(f"README.md: benchmark table from {LATEST.name}")


if __name__ == "__main__":
    main()
