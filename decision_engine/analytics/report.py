"""`report`: acceptance and resolution per experiment arm and offer, from the outcome counters.

Reads the hashes the outcome script and the server keep in Redis (`nba:offer-stats`,
`nba:arm-stats`). Parsing and the statistics are pure functions; only `read_counters`
and the command touch Redis or the terminal.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import click
import redis
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from decision_engine.config import setting_option
from decision_engine.decide.experiment import CHALLENGER, CHAMPION, CONTROL
from decision_engine.store.keys import ARM_STATS, OFFER_STATS
from decision_engine.vocabulary import INTERACTION_OUTCOMES, OFFER_OUTCOMES

CONFIDENCE = 0.95
Z_95 = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
"""Two-sided standard normal quantile of the confidence level (1.95996…)."""
DECISIONS = "decisions"
KNOWN_ARMS = (CHAMPION, CHALLENGER, CONTROL)
UPLIFT_METHOD = "newcombe-hybrid-score"
NO_OUTCOMES = "no outcomes recorded yet"
CONNECT_TIMEOUT_S = 5.0


# --- statistics ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    """A confidence interval."""

    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Rate:
    """A proportion with its 95% Wilson score interval."""

    successes: int
    trials: int
    value: float
    interval: Interval


@dataclass(frozen=True, slots=True)
class Difference:
    """A difference of two proportions with its 95% confidence interval."""

    value: float
    interval: Interval


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> Interval:
    """Wilson score interval of successes / trials (no continuity correction)."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    # Exact at 0 and 1 (the formula gives them up to rounding).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(low, high)


def rate(successes: int, trials: int) -> Rate | None:
    """successes / trials with its interval; None without trials or when successes > trials."""
    if trials <= 0 or not 0 <= successes <= trials:
        return None
    return Rate(successes, trials, successes / trials, wilson_interval(successes, trials))


def difference(a: Rate, b: Rate) -> Difference:
    """a − b with Newcombe's hybrid score interval (his method 10, 1998), built from the
    two Wilson intervals: better coverage than the normal approximation at small counts
    or rates near 0 or 1, and it never leaves [-1, 1]."""
    d = a.value - b.value
    below = math.hypot(a.value - a.interval.low, b.interval.high - b.value)
    above = math.hypot(a.interval.high - a.value, b.value - b.interval.low)
    return Difference(d, Interval(max(-1.0, d - below), min(1.0, d + above)))


# --- parsing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OfferCounts:
    """Offer outcomes of one offer (in one arm, or in all)."""

    presented: int = 0
    accepted: int = 0
    declined: int = 0
    no_response: int = 0


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """Decisions and interaction outcomes of one arm."""

    decisions: int = 0
    resolved: int = 0
    not_resolved: int = 0


@dataclass(frozen=True, slots=True)
class Counters:
    """The two hashes, typed."""

    arms: Mapping[str, ArmCounts]
    by_arm_offer: Mapping[tuple[str, str], OfferCounts]
    """(arm, offer) → counts, from the `arm|offer|outcome` fields."""
    by_offer: Mapping[str, OfferCounts]
    """offer → counts over all arms, from the `offer|outcome` fields."""
    ignored: tuple[str, ...] = ()
    """Fields not understood (unknown outcome, bad shape or value), in hash order."""

    @property
    def has_outcomes(self) -> bool:
        """Any offer or interaction outcome at all (decisions alone are not outcomes)."""
        offers = [*self.by_offer.values(), *self.by_arm_offer.values()]
        interactions = (c.resolved + c.not_resolved for c in self.arms.values())
        return any(_total(c) for c in offers) or any(interactions)


def _total(counts: OfferCounts) -> int:
    return counts.presented + counts.accepted + counts.declined + counts.no_response


def _count(value: str) -> int | None:
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 0 else None


def parse_counters(offer_stats: Mapping[str, str], arm_stats: Mapping[str, str]) -> Counters:
    """Type the fields of `nba:offer-stats` and `nba:arm-stats` (offer ids have no "|")."""
    ignored: list[str] = []
    arm_fields: dict[str, Counter[str]] = {}
    for field, value in arm_stats.items():
        arm, sep, what = field.rpartition("|")
        n = _count(value)
        if not sep or what not in (DECISIONS, *INTERACTION_OUTCOMES) or n is None:
            ignored.append(f"{ARM_STATS} {field}")
            continue
        arm_fields.setdefault(arm, Counter())[what] += n
    per_arm: dict[tuple[str, str], Counter[str]] = {}
    per_offer: dict[str, Counter[str]] = {}
    for field, value in offer_stats.items():
        parts = field.split("|")
        n = _count(value)
        if len(parts) not in (2, 3) or parts[-1] not in OFFER_OUTCOMES or n is None:
            ignored.append(f"{OFFER_STATS} {field}")
            continue
        if len(parts) == 3:
            per_arm.setdefault((parts[0], parts[1]), Counter())[parts[2]] += n
        else:
            per_offer.setdefault(parts[0], Counter())[parts[1]] += n
    return Counters(
        arms={
            arm: ArmCounts(c[DECISIONS], c["resolved"], c["not_resolved"])
            for arm, c in arm_fields.items()
        },
        by_arm_offer={key: _offer_counts(c) for key, c in per_arm.items()},
        by_offer={offer: _offer_counts(c) for offer, c in per_offer.items()},
        ignored=tuple(ignored),
    )


def _offer_counts(c: Mapping[str, int]) -> OfferCounts:
    return OfferCounts(c["presented"], c["accepted"], c["declined"], c["no_response"])


# --- report -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArmRow:
    """One arm's figures."""

    arm: str
    decisions: int
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
class Report:
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


def build_report(counters: Counters) -> Report:
    """Rates, intervals and uplift from the typed counters."""
    arms = sorted(set(counters.arms) | {arm for arm, _ in counters.by_arm_offer}, key=arm_order)
    offers = sorted(
        (
            _offer_row(arm, offer, c)
            for (arm, offer), c in counters.by_arm_offer.items()
            if _total(c)
        ),
        key=lambda r: (arm_order(r.arm), -r.presented, r.offer),
    )
    control_counts = counters.arms.get(CONTROL, ArmCounts())
    control = rate(control_counts.resolved, control_counts.resolved + control_counts.not_resolved)
    rows = tuple(_arm_row(arm, counters, offers, control) for arm in arms)
    inconsistent = [f"arm {r.arm}" for r in rows if r.accepted > r.presented]
    inconsistent += [f"offer {r.offer} in arm {r.arm}" for r in offers if r.accepted > r.presented]
    return Report(
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


def report_json(report: Report) -> dict[str, Any]:
    """The report as plain data: rates are fractions, intervals are 95%."""
    data: dict[str, Any] = {
        "confidence": CONFIDENCE,
        "interval_method": "wilson",
        "uplift_method": UPLIFT_METHOD,
        "arms": [
            {
                "arm": r.arm,
                "decisions": r.decisions,
                "presented": r.presented,
                "accepted": r.accepted,
                "acceptance_rate": _rate_json(r.acceptance),
                "accepted_per_decision": r.accepted_per_decision,
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


def _acceptance_table(report: Report) -> Table:
    table = Table(title="Acceptance by arm (95% intervals)", title_justify="left")
    table.add_column("arm")
    for name in ("decisions", "presented", "accepted", "acceptance", "accepted / decision"):
        table.add_column(name, justify="right")
    for r in report.arms:
        per_decision = r.accepted_per_decision
        table.add_row(
            escape(r.arm), f"{r.decisions:,}", f"{r.presented:,}", f"{r.accepted:,}",
            _rate_cell(r.acceptance), "n/a" if per_decision is None else f"{per_decision:.3f}",
        )  # fmt: skip
    return table


def _resolution_table(report: Report) -> Table:
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


def _offer_table(report: Report) -> Table:
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


def print_report(report: Report, console: Console) -> None:
    """Readable tables: per arm, then per arm and offer."""
    console.print(_acceptance_table(report))
    console.print(_resolution_table(report))
    if report.offers:
        console.print(_offer_table(report))
    for what in report.inconsistent:
        console.print(f"[yellow]warning:[/] {escape(what)}: more accepted than presented, no rate")
    if report.ignored:
        console.print(f"[yellow]warning:[/] {len(report.ignored):,} unrecognised field(s) ignored")


# --- I/O and command ----------------------------------------------------------------------


def read_counters(redis_url: str) -> Counters:
    """Both hashes, read in one transaction so that they agree; redis.RedisError or
    ValueError (a bad URL) when Redis cannot be read."""
    client = redis.Redis.from_url(
        redis_url,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=CONNECT_TIMEOUT_S,
    )
    with client:
        pipe = client.pipeline(transaction=True)
        pipe.hgetall(OFFER_STATS)
        pipe.hgetall(ARM_STATS)
        offer_stats, arm_stats = pipe.execute()
    return parse_counters(offer_stats, arm_stats)


@click.command("report")
@click.option(
    "--redis-url",
    envvar=setting_option("redis_url").env,
    required=True,
    show_envvar=True,
    help="Redis with the outcome counters (redis://…).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def report_command(redis_url: str, as_json: bool) -> None:
    """Acceptance and resolution per experiment arm and offer, with uplift over control."""
    try:
        counters = read_counters(redis_url)
    except (redis.RedisError, ValueError) as exc:
        raise click.ClickException(f"cannot read the outcome counters from Redis: {exc}") from exc
    report = build_report(counters)
    if as_json:
        click.echo(json.dumps(report_json(report), indent=2))
    elif not report.has_outcomes:
        decisions = sum(r.decisions for r in report.arms)
        click.echo(NO_OUTCOMES + (f" ({decisions:,} decisions)" if decisions else ""))
    else:
        print_report(report, Console())
