"""A simulation report as one self-contained HTML page: inline CSS bar charts, no scripts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from decision_engine.authoring.figures import money, offer_list, signed
from decision_engine.authoring.results import Diff, RunSummary, Share, SimulationReport

TOP_OFFERS = 30
TOP_ROWS = 25

_CSS = """
:root { --new: #2f6fde; --base: #a3adb8; --ink: #1d2733; --muted: #5d6b7a; --line: #e3e8ee; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); margin: 0; background: #f6f8fa; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 12px; }
p.sub { color: var(--muted); margin: 0 0 20px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px;
          padding: 18px 22px; margin: 0 0 18px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 14px;
         background: none; border: 0; padding: 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 14px 18px; }
.card .k { color: var(--muted); font-size: 13px; }
.card .v { font-size: 21px; font-weight: 600; white-space: nowrap; }
.card .was { color: var(--muted); font-size: 13px; }
.legend { display: flex; gap: 18px; color: var(--muted); font-size: 13px; margin: -4px 0 12px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
            margin-right: 6px; vertical-align: -1px; }
.chart .row { display: grid; grid-template-columns: 260px 1fr 150px; gap: 12px;
              align-items: center; padding: 5px 0; border-top: 1px solid var(--line); }
.chart .row:first-child { border-top: 0; }
.label { overflow-wrap: anywhere; }
.label small { display: block; color: var(--muted); }
.bars { display: flex; flex-direction: column; gap: 3px; }
.bar { height: 14px; border-radius: 3px; min-width: 1px; }
.bar.new { background: var(--new); }
.bar.base { background: var(--base); }
.value { text-align: right; font-variant-numeric: tabular-nums; }
.value small { display: block; color: var(--muted); }
.up { color: #1a7f37; } .down { color: #c62828; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 6px 8px; border-top: 1px solid var(--line);
         vertical-align: top; }
th { color: var(--muted); font-weight: 600; border-top: 0; }
td.n, th.n { text-align: right; }
.note { color: var(--muted); font-size: 13px; margin: 10px 0 0; }
footer { color: var(--muted); font-size: 13px; }
"""


@dataclass(frozen=True, slots=True)
class _Bar:
    """One row of a chart: the new figure, and the baseline's when comparing."""

    label: str
    detail: str
    new: Share
    base: Share | None


def render_html(report: SimulationReport) -> str:
    """The whole page."""
    new, base = report.new, report.baseline
    title = f"What-if simulation: {new.label or new.rules_dir} ({new.version})"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">{escape(_subtitle(report))}</p>',
        _cards(report),
        _chart(
            "Routing: share of customers per queue",
            _queue_bars(new, base),
            comparing=base is not None,
        ),
        _chart(
            "Offers shown: share of customers who see each offer",
            _offer_bars(new, base),
            comparing=base is not None,
            note=_offer_note(new),
        ),
    ]
    if report.diff is not None and base is not None:
        parts.append(_changes(report.diff, report.customers))
    parts.append(_rules(report))
    parts.append(f"<footer>{escape(_speed(report))}</footer></main></body></html>")
    return "\n".join(parts) + "\n"


def _subtitle(report: SimulationReport) -> str:
    moment = datetime.fromtimestamp(report.now, UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = f"{report.customers:,} customers, {report.population}; decided as at {moment}"
    if report.baseline is not None:
        text += f"; compared with baseline {report.baseline.rules_dir} ({report.baseline.version})"
    return text


def _speed(report: SimulationReport) -> str:
    runs = [("new", report.new), ("baseline", report.baseline)]
    return "Simulated through the live decision core: " + ", ".join(
        f"{name} {o.decisions_per_second:,.0f} decisions/s" for name, o in runs if o is not None
    )


def _cards(report: SimulationReport) -> str:
    new, base = report.new, report.baseline
    cards = [_card("Customers", f"{report.customers:,}")]
    if report.diff is not None:
        share = report.diff.changed / report.customers if report.customers else 0.0
        cards.append(
            _card("Decisions that change", f"{report.diff.changed:,}", f"{share:.1%} of customers")
        )
    cards += [
        _card(
            "Expected value, first offer",
            money(new.first_offer_ev),
            _was(money(base.first_offer_ev), money(new.first_offer_ev - base.first_offer_ev))
            if base
            else "",
        ),
        _card(
            "Expected value, all offers shown",
            money(new.all_offers_ev),
            _was(money(base.all_offers_ev), money(new.all_offers_ev - base.all_offers_ev))
            if base
            else "",
        ),
        _card(
            "Customers with no offer",
            f"{new.no_offer:,}",
            _was(f"{base.no_offer:,}", signed(new.no_offer - base.no_offer)) if base else "",
        ),
    ]
    return '<section class="cards">' + "".join(cards) + "</section>"


def _card(key: str, value: str, note: str = "") -> str:
    extra = f'<div class="was">{escape(note)}</div>' if note else ""
    return (
        f'<div class="card"><div class="k">{escape(key)}</div>'
        f'<div class="v">{escape(value)}</div>{extra}</div>'
    )


def _was(text: str, change: str) -> str:
    return f"baseline {text} · change {change}"


def _queue_bars(new: RunSummary, base: RunSummary | None) -> list[_Bar]:
    after = {s.key: s for s in new.queues}
    before = {s.key: s for s in base.queues} if base else {}
    keys = list(after) + [k for k in before if k not in after]
    return [_bar(k, "", after, before, base is not None) for k in keys]


def _offer_bars(new: RunSummary, base: RunSummary | None) -> list[_Bar]:
    after = {s.key: s for s in new.offers if s.count}
    before = {s.key: s for s in base.offers if s.count} if base else {}
    keys = sorted(
        after.keys() | before.keys(),
        key=lambda k: (-max(_count(after, k), _count(before, k)), k),
    )[:TOP_OFFERS]
    titles = {s.key: s.title for s in (*new.offers, *(base.offers if base else ()))}
    return [_bar(k, titles.get(k, ""), after, before, base is not None) for k in keys]


def _count(shares: dict[str, Share], key: str) -> int:
    share = shares.get(key)
    return share.count if share else 0


def _bar(
    key: str, detail: str, after: dict[str, Share], before: dict[str, Share], comparing: bool
) -> _Bar:
    empty = Share(key, 0, 0.0)
    return _Bar(key, detail, after.get(key, empty), before.get(key, empty) if comparing else None)


def _offer_note(new: RunSummary) -> str:
    shown = sum(1 for s in new.offers if s.count)
    never = len(new.offers) - shown
    note = f"{shown:,} of {len(new.offers):,} offers are shown to at least one customer"
    if shown > TOP_OFFERS:
        note += f"; the {TOP_OFFERS} most shown are charted"
    return note + (f"; {never:,} are never shown." if never else ".")


def _chart(title: str, bars: Sequence[_Bar], *, comparing: bool, note: str = "") -> str:
    # Scale to the largest figure so the leading bar spans the track.
    peak = max((max(b.new.share, b.base.share if b.base else 0.0) for b in bars), default=0.0)
    rows = "".join(_chart_row(b, peak) for b in bars) or '<p class="note">Nothing to show.</p>'
    legend = (
        '<div class="legend"><span><i style="background:var(--base)"></i>baseline</span>'
        '<span><i style="background:var(--new)"></i>new</span></div>'
        if comparing
        else ""
    )
    footer = f'<p class="note">{escape(note)}</p>' if note else ""
    return (
        f"<section><h2>{escape(title)}</h2>{legend}"
        f'<div class="chart">{rows}</div>{footer}</section>'
    )


def _chart_row(bar: _Bar, peak: float) -> str:
    def width(share: float) -> str:
        return f"{100 * share / peak:.2f}%" if peak else "0%"

    bars = ""
    value = f"{bar.new.share:.1%} <small>{bar.new.count:,} customers</small>"
    if bar.base is not None:
        bars += f'<div class="bar base" style="width:{width(bar.base.share)}"></div>'
        delta = bar.new.count - bar.base.count
        trend = "up" if delta > 0 else "down" if delta < 0 else ""
        value = (
            f'{bar.new.share:.1%} <small>was {bar.base.share:.1%} · <span class="{trend}">'
            f"{signed(delta)}</span></small>"
        )
    bars += f'<div class="bar new" style="width:{width(bar.new.share)}"></div>'
    detail = f"<small>{escape(bar.detail)}</small>" if bar.detail else ""
    return (
        f'<div class="row"><div class="label">{escape(bar.label)}{detail}</div>'
        f'<div class="bars">{bars}</div><div class="value">{value}</div></div>'
    )


def _changes(diff: Diff, customers: int) -> str:
    share = diff.changed / customers if customers else 0.0
    parts = [
        "<section><h2>What changes</h2>",
        f"<p>{diff.changed:,} of {customers:,} decisions change ({share:.1%}): "
        f"{diff.routing_changed:,} customers are routed elsewhere, "
        f"{diff.offers_changed:,} see a different list of offers.</p>",
    ]
    if diff.transitions:
        parts.append("<h3>Routing transitions</h3>")
        parts.append(
            _table(
                ("from", "to", "customers"),
                ((t.before, t.after, f"{t.count:,}") for t in diff.transitions[:TOP_ROWS]),
                text_columns=2,
            )
        )
    moved = [d for d in diff.offers if d.gained or d.lost][:TOP_ROWS]
    if moved:
        parts.append("<h3>Offers gained and lost</h3>")
        parts.append(
            _table(
                ("offer", "baseline", "new", "gained", "lost"),
                (
                    (d.offer_id, f"{d.baseline:,}", f"{d.new:,}", signed(d.gained), signed(-d.lost))
                    for d in moved
                ),
                text_columns=1,
            )
        )
    if diff.top_changes:
        parts.append("<h3>Most common offer list changes</h3>")
        parts.append(
            _table(
                ("baseline offers", "new offers", "customers"),
                (
                    (offer_list(c.before), offer_list(c.after), f"{c.count:,}")
                    for c in diff.top_changes
                ),
                text_columns=2,
            )
        )
    parts.append("</section>")
    return "".join(parts)


def _rules(report: SimulationReport) -> str:
    if report.diff is not None:
        body = _table(
            ("routing rule", "baseline", "new", "change"),
            (
                (r.rule_id, f"{r.baseline:,}", f"{r.new:,}", signed(r.new - r.baseline))
                for r in report.diff.routing_rules
            ),
            text_columns=1,
        )
    else:
        body = _table(
            ("routing rule", "customers", "share"),
            ((s.key, f"{s.count:,}", f"{s.share:.1%}") for s in report.new.routing_rules),
            text_columns=1,
        )
    note = "A rule with no customers never wins for this population."
    return f'<section><h2>Routing rule that won</h2>{body}<p class="note">{note}</p></section>'


def _table(headings: Sequence[str], rows: Iterable[Sequence[str]], *, text_columns: int) -> str:
    """Columns from `text_columns` on hold figures, right-aligned so the digits line up."""

    def cell(tag: str, i: int, text: str) -> str:
        align = ' class="n"' if i >= text_columns else ""
        return f"<{tag}{align}>{escape(text)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headings))
    body = "".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
