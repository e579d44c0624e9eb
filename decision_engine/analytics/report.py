"""`report`: acceptance and resolution per experiment arm and offer, from the outcome counters.

Reads the hashes the outcome script and the server keep in Redis (`nba:offer-stats`,
`nba:arm-stats`). The counters are read and typed in `counters.py`, the
intervals computed in `stats.py`; this module builds the rows and prints them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import redis
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from decision_engine.analytics.counters import (
    ArmCounts,
    Counters,
    OfferCounts,
    is_outcome_log,
    read_counters,
)
from decision_engine.analytics.stats import CONFIDENCE, Difference, Rate, difference, rate
from decision_engine.config import setting_option
from decision_engine.decide.experiment import CHALLENGER, CHAMPION, CONTROL
from decision_engine.store.embedded import running_url

KNOWN_ARMS = (CHAMPION, CHALLENGER, CONTROL)
UPLIFT_METHOD = "newcombe-hybrid-score"
NO_OUTCOMES = "no outcomes recorded yet"


@dataclass(frozen=True, slots=True)
class ArmRow:
    """One arm's figures."""

    arm: str
    decisions: int
    """Decisions that got an outcome (offer or interaction): the counter is kept when an
    outcome is applied, so decisions without any outcome are in no count here."""
    presented: int
    accepted: int
    acceptance: Rate | None
    resolved: int
    not_resolved: int
    resolution: Rate | None
    uplift: Difference | None
    """Resolution rate minus control's; None for control itself or without data on either."""
    accepted_per_decision: float | None


@dataclass(frozen=True, slots=True)
class OfferRow:
    """One offer's figures in one arm."""

    arm: str
    offer: str
    presented: int
    accepted: int
    declined: int
    no_response: int
    acceptance: Rate | None


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    """Everything the command prints."""

    arms: tuple[ArmRow, ...]
    offers: tuple[OfferRow, ...]
    has_outcomes: bool
    unattributed: int
    """Offer outcomes counted per offer but in no arm (recorded before arms were counted)."""
    ignored: tuple[str, ...]
    inconsistent: tuple[str, ...]
    """Rows with more acceptances than presentations: no rate for them."""


def arm_order(arm: str) -> tuple[int, str]:
    """Champion, challenger, control, then any other arm by name."""
    return (KNOWN_ARMS.index(arm) if arm in KNOWN_ARMS else len(KNOWN_ARMS), arm)


def build_report(counters: Counters) -> OutcomeReport:
    """Rates, intervals and uplift from the typed counters."""
    arms = sorted(set(counters.arms) | {arm for arm, _ in counters.by_arm_offer}, key=arm_order)
    offers = sorted(
        (_offer_row(arm, offer, c) for (arm, offer), c in counters.by_arm_offer.items() if c.total),
        key=lambda r: (arm_order(r.arm), -r.presented, r.offer),
    )
    control_counts = counters.arms.get(CONTROL, ArmCounts())
    control = rate(control_counts.resolved, control_counts.resolved + control_counts.not_resolved)
    rows = tuple(_arm_row(arm, counters, offers, control) for arm in arms)
    inconsistent = [f"arm {r.arm}" for r in rows if r.accepted > r.presented]
    inconsistent += [f"offer {r.offer} in arm {r.arm}" for r in offers if r.accepted > r.presented]
    return OutcomeReport(
        arms=rows,
        offers=tuple(offers),
        has_outcomes=counters.has_outcomes,
        unattributed=_unattributed(counters),
        ignored=counters.ignored,
        inconsistent=tuple(inconsistent),
    )


def _offer_row(arm: str, offer: str, c: OfferCounts) -> OfferRow:
    return OfferRow(
        arm, offer, c.presented, c.accepted, c.declined, c.no_response,
        rate(c.accepted, c.presented),
    )  # fmt: skip


def _arm_row(
    arm: str, counters: Counters, offers: Sequence[OfferRow], control: Rate | None
) -> ArmRow:
    counts = counters.arms.get(arm, ArmCounts())
    presented = sum(r.presented for r in offers if r.arm == arm)
    accepted = sum(r.accepted for r in offers if r.arm == arm)
    resolution = rate(counts.resolved, counts.resolved + counts.not_resolved)
    uplift = None
    if arm != CONTROL and resolution is not None and control is not None:
        uplift = difference(resolution, control)
    return ArmRow(
        arm=arm,
        decisions=counts.decisions,
        presented=presented,
        accepted=accepted,
        acceptance=rate(accepted, presented),
        resolved=counts.resolved,
        not_resolved=counts.not_resolved,
        resolution=resolution,
        uplift=uplift,
        accepted_per_decision=accepted / counts.decisions if counts.decisions else None,
    )


def _unattributed(counters: Counters) -> int:
    in_arms: dict[str, Counter[str]] = {}
    for (_, offer), c in counters.by_arm_offer.items():
        in_arms.setdefault(offer, Counter()).update(_as_counter(c))
    missing = 0
    for offer, c in counters.by_offer.items():
        attributed = in_arms.get(offer, Counter())
        missing += sum(max(0, n - attributed[k]) for k, n in _as_counter(c).items())
    return missing


def _as_counter(c: OfferCounts) -> Counter[str]:
    return Counter(
        presented=c.presented, accepted=c.accepted, declined=c.declined, no_response=c.no_response
    )


# --- output -------------------------------------------------------------------------------


def _rate_json(r: Rate | None) -> dict[str, float] | None:
    return None if r is None else {"rate": r.value, "low": r.interval.low, "high": r.interval.high}


def report_json(report: OutcomeReport) -> dict[str, Any]:
    """The report as plain data: rates are fractions, intervals are 95%."""
    data: dict[str, Any] = {
        "confidence": CONFIDENCE,
        "interval_method": "wilson",
        "uplift_method": UPLIFT_METHOD,
        "arms": [
            {
                "arm": r.arm,
                "decisions_with_outcome": r.decisions,
                "presented": r.presented,
                "accepted": r.accepted,
                "acceptance_rate": _rate_json(r.acceptance),
                "accepted_per_decision_with_outcome": r.accepted_per_decision,
                "resolved": r.resolved,
                "not_resolved": r.not_resolved,
                "resolution_rate": _rate_json(r.resolution),
                "uplift_over_control": None
                if r.uplift is None
                else {
                    "difference": r.uplift.value,
                    "low": r.uplift.interval.low,
                    "high": r.uplift.interval.high,
                },
            }
            for r in report.arms
        ],
        "offers": [
            {
                "arm": r.arm,
                "offer": r.offer,
                "presented": r.presented,
                "accepted": r.accepted,
                "declined": r.declined,
                "no_response": r.no_response,
                "acceptance_rate": _rate_json(r.acceptance),
            }
            for r in report.offers
        ],
        "unattributed_offer_outcomes": report.unattributed,
        "ignored_fields": list(report.ignored),
        "inconsistent": list(report.inconsistent),
    }
    if not report.has_outcomes:
        data["message"] = NO_OUTCOMES
    return data


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _rate_cell(r: Rate | None) -> str:
    if r is None:
        return "n/a"
    low, high = r.interval.low * 100, r.interval.high * 100
    return f"{_pct(r.value)} [dim]({low:.1f}–{high:.1f})[/]"


def _uplift_cell(row: ArmRow) -> str:
    if row.arm == CONTROL:
        return "[dim]baseline[/]"
    if row.uplift is None:
        return "n/a"
    d, i = row.uplift.value, row.uplift.interval
    return f"{d * 100:+.1f} [dim]({i.low * 100:+.1f} to {i.high * 100:+.1f})[/]"


def _acceptance_table(report: OutcomeReport) -> Table:
    table = Table(title="Acceptance by arm (95% intervals)", title_justify="left")
    table.add_column("arm")
    for name in (
        "decisions with an outcome", "presented", "accepted", "acceptance",
        "accepted / decision with an outcome",
    ):  # fmt: skip
        table.add_column(name, justify="right")
    for r in report.arms:
        per_decision = r.accepted_per_decision
        table.add_row(
            escape(r.arm), f"{r.decisions:,}", f"{r.presented:,}", f"{r.accepted:,}",
            _rate_cell(r.acceptance), "n/a" if per_decision is None else f"{per_decision:.3f}",
        )  # fmt: skip
    return table


def _resolution_table(report: OutcomeReport) -> Table:
    table = Table(title="Resolution by arm (95% intervals)", title_justify="left")
    table.add_column("arm")
    for name in ("resolved", "not resolved", "resolution", "uplift vs control (pp)"):
        table.add_column(name, justify="right")
    for r in report.arms:
        table.add_row(
            escape(r.arm), f"{r.resolved:,}", f"{r.not_resolved:,}",
            _rate_cell(r.resolution), _uplift_cell(r),
        )  # fmt: skip
    table.caption = "uplift: resolution rate minus control's (Newcombe hybrid score interval)"
    return table


def _offer_table(report: OutcomeReport) -> Table:
    table = Table(title="Acceptance by arm and offer (95% intervals)", title_justify="left")
    table.add_column("arm", overflow="fold")
    table.add_column("offer", overflow="fold")
    for name in ("presented", "accepted", "declined", "no response"):
        table.add_column(name, justify="right")
    table.add_column("acceptance", justify="right", overflow="fold")
    for r in report.offers:
        table.add_row(
            escape(r.arm), escape(r.offer), f"{r.presented:,}", f"{r.accepted:,}",
            f"{r.declined:,}", f"{r.no_response:,}", _rate_cell(r.acceptance),
        )  # fmt: skip
    if report.unattributed:
        table.caption = (
            f"{report.unattributed:,} offer outcome(s) in no arm (counted before arms were)"
        )
    return table


def print_report(report: OutcomeReport, console: Console) -> None:
    """Readable tables: per arm, then per arm and offer."""
    console.print(_acceptance_table(report))
    console.print(_resolution_table(report))
    if report.offers:
        console.print(_offer_table(report))
    for what in report.inconsistent:
        console.print(f"[yellow]warning:[/] {escape(what)}: more accepted than presented, no rate")
    if report.ignored:
        console.print(f"[yellow]warning:[/] {len(report.ignored):,} unrecognised field(s) ignored")


# --- command ------------------------------------------------------------------------------


def _decision_redis_hint(data_dir: Path) -> str:
    url = running_url(data_dir / "redis")
    if url is not None:
        return _address(url) + " (the embedded one: run report without --redis-url)"
    return "the --redis-url given to serve"


def _same_server(url: str, other: str | None) -> bool:
    """Whether both URLs name one server (host and port)."""
    if other is None:
        return False
    a, b = urlsplit(url), urlsplit(other)
    return (a.hostname, a.port or 6379) == (b.hostname, b.port or 6379)


def _address(url: str) -> str:
    """The URL without its password, to print."""
    parsed = urlsplit(url)
    netloc = parsed.netloc.rpartition("@")[2]
    return parsed._replace(netloc=netloc).geturl()


@click.command("report")
@click.option(
    "--redis-url",
    envvar=setting_option("redis_url").env,
    show_envvar=True,
    help="The decision Redis, with the outcome counters (redis://…); default: the "
    "embedded Redis that serve runs in DATA-DIR/redis.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=setting_option("data_dir").default,
    envvar=setting_option("data_dir").env,
    show_default=True,
    show_envvar=True,
    help="Where serve keeps its embedded Redis (without --redis-url).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def report_command(redis_url: str | None, data_dir: Path, as_json: bool) -> None:
    """Acceptance and resolution per experiment arm and offer, with uplift over control."""
    if not redis_url:
        redis_url = running_url(data_dir / "redis")
        if redis_url is None:
            raise click.ClickException(
                f"no --redis-url given and no embedded Redis of serve running in "
                f"{data_dir / 'redis'}: start serve (make run), or pass --redis-url "
                f"(or {setting_option('redis_url').env}) of the decision Redis"
            )
    try:
        counters = read_counters(redis_url)
        outcome_log = not counters.arms and not counters.by_offer
        outcome_log = outcome_log and (
            _same_server(redis_url, running_url(data_dir / "redis-outcomes"))
            or is_outcome_log(redis_url)
        )
    except (redis.RedisError, ValueError) as exc:
        raise click.ClickException(f"cannot read the outcome counters from Redis: {exc}") from exc
    if outcome_log:
        raise click.ClickException(
            f"{_address(redis_url)} is the outcome log; the counters are in the decision "
            f"Redis: {_decision_redis_hint(data_dir)}"
        )
    report = build_report(counters)
    if as_json:
        click.echo(json.dumps(report_json(report), indent=2))
    elif not report.has_outcomes:
        decisions = sum(r.decisions for r in report.arms)
        suffix = f" ({decisions:,} decisions with an outcome)" if decisions else ""
        click.echo(NO_OUTCOMES + suffix)
    else:
        print_report(report, Console())
