"""A simulation report as tables on the terminal: routing, rules, offers, value, changes."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from decision_engine.authoring.figures import iso_instant, money, offer_list, pct, signed
from decision_engine.authoring.results import Diff, RunSummary, Share, SimulationReport


def print_report(report: SimulationReport, console: Console, *, top: int = 25) -> None:
    """Readable tables: routing, rules, offers, value, and the changes."""
    new, old = report.new, report.baseline
    console.print(_heading(report))
    console.print(_queue_table(new, old))
    console.print(_rule_table(report))
    console.print(_offer_table(report, top))
    console.print(_value_table(new, old))
    if report.diff is not None:
        _print_diff(report.diff, report.customers, console, top)


def _heading(report: SimulationReport) -> str:
    lines = [
        f"[bold]Simulation[/] at {iso_instant(report.now)}: {report.customers:,} customers, "
        f"{escape(report.population)}"
    ]
    for name, outcome in (("baseline", report.baseline), ("new", report.new)):
        if outcome is not None:
            lines.append(
                f"  {name}: {escape(outcome.rules_dir)} (ruleset {outcome.version}"
                f"{', ' + outcome.label if outcome.label else ''}): "
                f"{outcome.decisions_per_second:,.0f} decisions/s"
            )
    return "\n".join(lines)


def _queue_table(new: RunSummary, old: RunSummary | None) -> Table:
    table = Table(title="Routing queue", title_justify="left")
    table.add_column("queue")
    before = {s.key: s for s in old.queues} if old else {}
    if old:
        table.add_column("baseline", justify="right")
    table.add_column("customers", justify="right")
    table.add_column("share", justify="right")
    if old:
        table.add_column("change", justify="right")
    after = {s.key: s for s in new.queues}
    keys = list(after) + [k for k in before if k not in after]
    for key in keys:
        a = after.get(key, Share(key, 0, 0.0))
        row = [key]
        if old:
            b = before.get(key, Share(key, 0, 0.0))
            row.append(f"{b.count:,} ({pct(b.share)})")
        row += [f"{a.count:,}", pct(a.share)]
        if old:
            row.append(signed(a.count - b.count))
        table.add_row(*row)
    return table


def _rule_table(report: SimulationReport) -> Table:
    table = Table(title="Routing rule that won", title_justify="left")
    table.add_column("rule")
    if report.diff is not None:
        table.add_column("baseline", justify="right")
        table.add_column("new", justify="right")
        table.add_column("change", justify="right")
        for r in report.diff.routing_rules:
            table.add_row(r.rule_id, f"{r.baseline:,}", f"{r.new:,}", signed(r.new - r.baseline))
        return table
    table.add_column("customers", justify="right")
    table.add_column("share", justify="right")
    for s in report.new.routing_rules:
        table.add_row(s.key, f"{s.count:,}", pct(s.share))
    return table


def _offer_table(report: SimulationReport, top: int) -> Table:
    new, diff = report.new, report.diff
    table = Table(title="Offers shown (customers who see the offer)", title_justify="left")
    table.add_column("offer")
    if diff is not None:
        for name in ("baseline", "new", "gained", "lost"):
            table.add_column(name, justify="right")
        for d in diff.offers[:top]:
            table.add_row(
                d.offer_id, f"{d.baseline:,}", f"{d.new:,}", signed(d.gained), signed(-d.lost)
            )
        hidden = len(diff.offers) - top
    else:
        table.add_column("customers", justify="right")
        table.add_column("share", justify="right")
        shown = [s for s in new.offers if s.count]
        for s in shown[:top]:
            table.add_row(s.key, f"{s.count:,}", pct(s.share))
        hidden = len(shown) - top
    if hidden > 0:
        table.caption = f"… and {hidden:,} more (--json lists every offer)"
    never = sum(1 for s in new.offers if not s.count)
    if never:
        table.caption = (table.caption + "; " if table.caption else "") + (
            f"{never:,} offer(s) never shown"
        )
    return table


def _value_table(new: RunSummary, old: RunSummary | None) -> Table:
    table = Table(title="Expected value (mean is per customer)", title_justify="left")
    table.add_column("")
    columns = [("baseline", old), ("new", new)] if old else [("new", new)]
    for name, _ in columns:
        table.add_column(name, justify="right")
    rows: list[tuple[str, Callable[[RunSummary], str]]] = [
        ("first offer, total", lambda o: money(o.first_offer_ev)),
        ("first offer, mean", lambda o: money(o.first_offer_ev_mean)),
        ("all offers shown, total", lambda o: money(o.all_offers_ev)),
        ("all offers shown, mean", lambda o: money(o.all_offers_ev_mean)),
        ("customers with no offer", lambda o: f"{o.no_offer:,} ({pct(o.no_offer / o.decisions)})"),
    ]
    for label, cell in rows:
        table.add_row(label, *[cell(o) for _, o in columns if o is not None])
    return table


def _print_diff(diff: Diff, customers: int, console: Console, top: int) -> None:
    console.print(
        f"[bold]{diff.changed:,}[/] of {customers:,} decisions change "
        f"({pct(diff.changed / customers if customers else 0.0)}): "
        f"{diff.routing_changed:,} routed elsewhere, {diff.offers_changed:,} see other offers"
    )
    if diff.transitions:
        table = Table(title="Routing transitions", title_justify="left")
        table.add_column("from → to")
        table.add_column("customers", justify="right")
        for t in diff.transitions[:top]:
            table.add_row(f"{t.before} → {t.after}", f"{t.count:,}")
        console.print(table)
    if diff.top_changes:
        table = Table(title="Most common offer list changes", title_justify="left")
        table.add_column("baseline")
        table.add_column("new")
        table.add_column("customers", justify="right")
        for c in diff.top_changes:
            table.add_row(offer_list(c.before), offer_list(c.after), f"{c.count:,}")
        console.print(table)
