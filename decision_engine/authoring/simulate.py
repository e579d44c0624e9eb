"""What-if before going live: run a population through decide() and compare two rulesets.

The simulation calls the same pure decision core as the server, so what it reports is
what the server would do for these customers and contexts at the given instant.
"""

from __future__ import annotations

import csv
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from decision_engine.authoring.report_html import render_html
from decision_engine.authoring.results import (
    BadLine,
    Diff,
    ListChange,
    OfferDelta,
    Outcome,
    Report,
    RuleDelta,
    Share,
    Transition,
)
from decision_engine.config import setting_option
from decision_engine.decide.engine import decide
from decision_engine.decide.model import Contact, Context, CustomerState
from decision_engine.errors import ProfileImportError, RulesetError
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.ruleset.fields import CONTACT_WINDOW_DAYS
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.store.generate import generate_profiles
from decision_engine.store.importer import _csv, _jsonl, canonical_profile, detect_format
from decision_engine.vocabulary import CHANNELS

DEFAULT_COUNT = 10_000
DECISION_ID = "simulation"
"""Every simulated decision shares one id: the core needs one, nobody reads it."""
PROGRESS_EVERY = 2048
TOP_CHANGES = 10
MAX_LISTED_ERRORS = 50
_DAY = 86_400.0

# The realistic mix a context is drawn from when the contexts file does not give one.
_CHANNEL_MIX = {"voice": 38, "chat": 22, "app": 14, "web": 10, "email": 10, "sms": 3, "social": 3}
_INTENT_MIX = {
    "general_inquiry": 30,
    "billing_dispute": 16,
    "upgrade": 12,
    "cancel": 10,
    "complaint": 9,
    "lost_card": 4,
}
_OTHER_INTENT_WEIGHT = 8
"""Weight of a declared intent the mix does not know by name."""
_PREFERRED_CHANNEL_SHARE = 0.5
# Sentiment is scored live on conversations only, and not always.
_SENTIMENT_CHANNELS = frozenset({"voice", "chat"})
_SENTIMENT_SHARE = 0.8
_SENTIMENT_RANGE = {
    "complaint": (-0.9, -0.2),
    "cancel": (-0.6, 0.2),
    "billing_dispute": (-0.7, 0.3),
}
# Earlier contacts in the window: most customers get in touch once, a few keep trying.
_EARLIER_CONTACTS = {0: 80, 1: 13, 2: 5, 3: 2}
_SAME_INTENT_SHARE = 0.7
_CONTEXT_KEYS = frozenset(
    {"customer_id", "channel", "intent", "sentiment", "attributes", "queue", "recent_contacts"}
)

ProgressCallback = Callable[[str, int], None]
"""Called with the run's label ("new" or "baseline") and the decisions made so far."""


# --- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Profiles:
    """Validated profiles in canonical text, as the store would hold them."""

    ids: tuple[str, ...]
    fields: tuple[dict[str, str], ...]
    source: str
    bad_lines: tuple[BadLine, ...] = ()


@dataclass(frozen=True, slots=True)
class Interaction:
    """One live context and the customer's earlier contacts in the window."""

    context: Context
    contacts: tuple[Contact, ...] = ()


@dataclass(frozen=True, slots=True)
class Contexts:
    """A contexts file: contexts bound to customers, and free ones dealt to the rest."""

    paired: Mapping[str, Interaction]
    free: tuple[Interaction, ...]
    bad_lines: tuple[BadLine, ...] = ()


@dataclass(frozen=True, slots=True)
class Population:
    """What each customer brings to the decision, built once before anything is timed."""

    customer_ids: tuple[str, ...]
    states: tuple[CustomerState, ...]
    contexts: tuple[Context, ...]
    source: str
    bad_lines: tuple[BadLine, ...] = ()
    warnings: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.customer_ids)


def profile_schema(ruleset: CompiledRuleset) -> dict[str, FieldSpec]:
    """The profile fields a ruleset declares (what an import validates)."""
    return {n: s for n, s in ruleset.source.fields.items() if s.source == "profile"}


def declared_intents(ruleset: CompiledRuleset) -> tuple[str, ...]:
    spec = ruleset.source.fields.get("intent")
    return spec.values if spec is not None else ()


def read_profiles(path: Path, schema: Mapping[str, FieldSpec]) -> Profiles:
    """Profiles of a JSON Lines or CSV import file; ProfileImportError if it cannot be read."""
    fmt = detect_format(path)
    by_id: dict[str, dict[str, str]] = {}
    bad: list[BadLine] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            records = _jsonl(handle) if fmt == "jsonl" else _csv(handle, path)
            for line, record in records:
                try:
                    if isinstance(record, str):
                        raise ValueError(record)
                    customer_id, fields = canonical_profile(record, schema)
                except ValueError as exc:
                    bad.append(BadLine(str(path), line, str(exc)))
                    continue
                by_id[customer_id] = fields  # like an import: a later line replaces
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProfileImportError(f"{path}: {exc}") from exc
    return Profiles(tuple(by_id), tuple(by_id.values()), f"from {path}", tuple(bad))


def generated_profiles(
    count: int, *, seed: int, today: date, schema: Mapping[str, FieldSpec]
) -> Profiles:
    """Synthetic customers, canonicalized exactly as an import of them would be."""
    ids: list[str] = []
    fields: list[dict[str, str]] = []
    for record in generate_profiles(count, seed=seed, today=today):
        customer_id, canonical = canonical_profile(record, schema)
        ids.append(customer_id)
        fields.append(canonical)
    return Profiles(tuple(ids), tuple(fields), f"generated (seed {seed})")


def read_contexts(path: Path, intents: Sequence[str], *, now: float) -> Contexts:
    """A JSON Lines contexts file; ProfileImportError if it cannot be read."""
    paired: dict[str, Interaction] = {}
    free: list[Interaction] = []
    bad: list[BadLine] = []
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for line, record in _jsonl(handle):
                try:
                    if isinstance(record, str):
                        raise ValueError(record)
                    customer_id, interaction = _interaction(record, intents, now, line)
                    if customer_id and customer_id in paired:
                        raise ValueError(f"a second context for customer {customer_id}")
                except ValueError as exc:
                    bad.append(BadLine(str(path), line, str(exc)))
                    continue
                if customer_id:
                    paired[customer_id] = interaction
                else:
                    free.append(interaction)
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileImportError(f"{path}: {exc}") from exc
    return Contexts(paired, tuple(free), tuple(bad))


def _interaction(
    record: Mapping[str, object], intents: Sequence[str], now: float, line: int
) -> tuple[str, Interaction]:
    unknown = sorted(set(record) - _CONTEXT_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}")
    customer_id = record.get("customer_id", "")
    if isinstance(customer_id, int) and not isinstance(customer_id, bool):
        customer_id = str(customer_id)
    if not isinstance(customer_id, str):
        raise ValueError("customer_id must be text")
    channel = _channel(record.get("channel"))
    intent = _intent(record.get("intent", ""), intents)
    queue = record.get("queue", "")
    if not isinstance(queue, str):
        raise ValueError("queue must be text")
    context = Context(
        channel=channel,
        intent=intent,
        queue=queue,
        sentiment=_sentiment(record.get("sentiment")),
        attributes=_attributes(record.get("attributes", {})),
    )
    contacts = _recent_contacts(record.get("recent_contacts", []), intents, now, line)
    return customer_id.strip(), Interaction(context, contacts)


def _channel(raw: object) -> str:
    if raw not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, got {raw!r}")
    assert isinstance(raw, str)
    return raw


def _intent(raw: object, intents: Sequence[str]) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise ValueError("intent must be text")
    # A misspelt intent would silently match nothing and skew every figure.
    if raw and intents and raw not in intents:
        raise ValueError(f"intent {raw!r} is not one of {', '.join(intents)}")
    return raw


def _sentiment(raw: object) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not -1 <= raw <= 1:
        raise ValueError(f"sentiment must be a number -1..1, got {raw!r}")
    return float(raw)


def _attributes(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ValueError("attributes must be an object")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[key] = str(value)
        elif value is not None:
            raise ValueError(f"attribute {key} must be text or a number")
    return out


def _recent_contacts(
    raw: object, intents: Sequence[str], now: float, line: int
) -> tuple[Contact, ...]:
    if not isinstance(raw, list):
        raise ValueError("recent_contacts must be a list")
    contacts = []
    for n, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError("recent_contacts items must be objects")
        days_ago = item.get("days_ago", 1)
        if isinstance(days_ago, bool) or not isinstance(days_ago, int | float) or days_ago < 0:
            raise ValueError("recent_contacts days_ago must be a number >= 0")
        channel = _channel(item.get("channel"))
        intent = _intent(item.get("intent", ""), intents)
        contacts.append(Contact(f"sim-{line}-{n}", channel, intent, now - days_ago * _DAY))
    return tuple(contacts)


def build_population(
    profiles: Profiles,
    intents: Sequence[str],
    *,
    now: float,
    seed: int,
    contexts: Contexts | None = None,
) -> Population:
    """Pair every customer with an interaction: from the file when it has one, else drawn."""
    mix = _Mix(intents, seed)
    paired = contexts.paired if contexts is not None else {}
    free = contexts.free if contexts is not None else ()
    states: list[CustomerState] = []
    chosen: list[Context] = []
    dealt = 0
    for customer_id, fields in zip(profiles.ids, profiles.fields, strict=True):
        interaction = paired.get(customer_id)
        if interaction is None and free:
            # Free contexts are dealt in file order, cycling, so the pairing is predictable.
            interaction = free[dealt % len(free)]
            dealt += 1
        if interaction is None:
            interaction = mix.draw(customer_id, fields, now)
        states.append(CustomerState(fields, interaction.contacts))
        chosen.append(interaction.context)
    warnings = _unmatched(paired, profiles.ids)
    bad = profiles.bad_lines + (contexts.bad_lines if contexts is not None else ())
    return Population(profiles.ids, tuple(states), tuple(chosen), profiles.source, bad, warnings)


def _unmatched(paired: Mapping[str, Interaction], ids: Sequence[str]) -> tuple[str, ...]:
    missing = set(paired) - set(ids)
    if not missing:
        return ()
    sample = ", ".join(sorted(missing)[:5])
    return (f"{len(missing)} context(s) name customers not in the population (e.g. {sample})",)


class _Mix:
    """A seeded draw of realistic contexts over the ruleset's declared intents."""

    def __init__(self, intents: Sequence[str], seed: int) -> None:
        # A string seed keeps this stream independent of the profile generator's.
        self.rng = random.Random(f"contexts:{seed}")
        self.channels = list(_CHANNEL_MIX)
        self.channel_weights = list(_CHANNEL_MIX.values())
        self.intents = list(intents) or [""]
        self.intent_weights = [_INTENT_MIX.get(i, _OTHER_INTENT_WEIGHT) for i in self.intents]
        self.earlier = list(_EARLIER_CONTACTS)
        self.earlier_weights = list(_EARLIER_CONTACTS.values())

    def draw(self, customer_id: str, profile: Mapping[str, str], now: float) -> Interaction:
        rng = self.rng
        preferred = profile.get("preferred_channel")
        if preferred in CHANNELS and rng.random() < _PREFERRED_CHANNEL_SHARE:
            channel = str(preferred)
        else:
            channel = rng.choices(self.channels, self.channel_weights)[0]
        intent = rng.choices(self.intents, self.intent_weights)[0]
        context = Context(
            channel=channel, intent=intent, sentiment=self._sentiment(channel, intent)
        )
        return Interaction(context, self._earlier(customer_id, intent, now))

    def _sentiment(self, channel: str, intent: str) -> float | None:
        rng = self.rng
        if channel not in _SENTIMENT_CHANNELS or rng.random() >= _SENTIMENT_SHARE:
            return None
        low_high = _SENTIMENT_RANGE.get(intent)
        value = rng.uniform(*low_high) if low_high else rng.gauss(0.15, 0.3)
        return round(max(-1.0, min(1.0, value)), 2)

    def _earlier(self, customer_id: str, intent: str, now: float) -> tuple[Contact, ...]:
        rng = self.rng
        count = rng.choices(self.earlier, self.earlier_weights)[0]
        window = CONTACT_WINDOW_DAYS - 0.1
        return tuple(
            Contact(
                f"{customer_id}-earlier-{n}",
                rng.choices(self.channels, self.channel_weights)[0],
                intent
                if rng.random() < _SAME_INTENT_SHARE
                else rng.choices(self.intents, self.intent_weights)[0],
                now - rng.uniform(0.05, window) * _DAY,
            )
            for n in range(count)
        )


# --- running ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """Per-customer results of one ruleset over a population, in population order."""

    queues: tuple[str, ...]
    rule_ids: tuple[str, ...]
    offer_ids: tuple[tuple[str, ...], ...]
    first_offer_ev: float
    all_offers_ev: float
    seconds: float
    """Time spent in the decision loop only."""


def run(
    ruleset: CompiledRuleset,
    population: Population,
    *,
    now: float,
    label: str = "new",
    progress: ProgressCallback | None = None,
) -> Run:
    """decide() for every customer; only what the report needs is kept."""
    queues: list[str] = []
    rule_ids: list[str] = []
    offer_ids: list[tuple[str, ...]] = []
    add_queue, add_rule, add_offers = queues.append, rule_ids.append, offer_ids.append
    first_ev = all_ev = 0.0
    states, contexts = population.states, population.contexts
    started = time.perf_counter()
    for start in range(0, len(states), PROGRESS_EVERY):
        end = start + PROGRESS_EVERY
        for state, context in zip(states[start:end], contexts[start:end], strict=True):
            decision = decide(
                ruleset, state=state, context=context, now=now, decision_id=DECISION_ID
            )
            routing = decision.routing
            add_queue(routing.queue)
            add_rule(routing.rule_id)
            offers = decision.offers
            if offers:
                first_ev += offers[0].expected_value
                for offer in offers:
                    all_ev += offer.expected_value
                add_offers(tuple([o.offer_id for o in offers]))
            else:
                add_offers(())
        if progress is not None:
            progress(label, len(queues))
    seconds = time.perf_counter() - started
    return Run(tuple(queues), tuple(rule_ids), tuple(offer_ids), first_ev, all_ev, seconds)


# --- summarizing --------------------------------------------------------------------------


def summarize(ruleset: CompiledRuleset, result: Run, rules_dir: str) -> Outcome:
    """Counts and shares of one run."""
    total = len(result.queues)
    queue_counts = Counter(result.queues)
    rule_counts = Counter(result.rule_ids)
    offer_counts = Counter(chain.from_iterable(result.offer_ids))
    route_ids = [r.id for r in ruleset.routes] + ["default"]
    offers = sorted(ruleset.offers, key=lambda o: -offer_counts[o.spec.id])  # stable: file order
    return Outcome(
        rules_dir=rules_dir,
        version=ruleset.version,
        label=ruleset.source.label,
        decisions=total,
        seconds=result.seconds,
        queues=tuple(_share(q, n, total) for q, n in _by_count(queue_counts)),
        routing_rules=tuple(_share(r, rule_counts[r], total) for r in route_ids),
        offers=tuple(
            _share(o.spec.id, offer_counts[o.spec.id], total, o.spec.title) for o in offers
        ),
        no_offer=sum(1 for ids in result.offer_ids if not ids),
        first_offer_ev=result.first_offer_ev,
        all_offers_ev=result.all_offers_ev,
    )


def _share(key: str, count: int, total: int, title: str = "") -> Share:
    return Share(key, count, count / total if total else 0.0, title)


def _by_count(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def compare(
    old: Run,
    new: Run,
    customer_ids: Sequence[str],
    *,
    old_rules: CompiledRuleset,
    new_rules: CompiledRuleset,
) -> Diff:
    """Customer by customer: both runs are over the same population in the same order."""
    changed: list[str] = []
    transitions: Counter[tuple[str, str]] = Counter()
    lists: Counter[tuple[tuple[str, ...], tuple[str, ...]]] = Counter()
    gained: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    rows = zip(customer_ids, old.queues, new.queues, old.offer_ids, new.offer_ids, strict=True)
    for customer_id, q_old, q_new, ids_old, ids_new in rows:
        if q_old == q_new and ids_old == ids_new:
            continue
        changed.append(customer_id)
        if q_old != q_new:
            transitions[q_old, q_new] += 1
        if ids_old != ids_new:
            lists[ids_old, ids_new] += 1
            gained.update(set(ids_new).difference(ids_old))
            lost.update(set(ids_old).difference(ids_new))
    return Diff(
        changed_customers=tuple(changed),
        routing_changed=transitions.total(),
        offers_changed=lists.total(),
        transitions=tuple(
            Transition(a, b, n)
            for (a, b), n in sorted(transitions.items(), key=lambda kv: (-kv[1], kv[0]))
        ),
        offers=_offer_deltas(old, new, gained, lost, _titles(old_rules, new_rules)),
        top_changes=tuple(
            ListChange(a, b, n)
            for (a, b), n in sorted(lists.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CHANGES]
        ),
        routing_rules=_rule_deltas(old, new, old_rules, new_rules),
    )


def _titles(*rulesets: CompiledRuleset) -> dict[str, str]:
    return {o.spec.id: o.spec.title for r in rulesets for o in r.offers}


def _offer_deltas(
    old: Run, new: Run, gained: Counter[str], lost: Counter[str], titles: Mapping[str, str]
) -> tuple[OfferDelta, ...]:
    before = Counter(chain.from_iterable(old.offer_ids))
    after = Counter(chain.from_iterable(new.offer_ids))
    deltas = [
        OfferDelta(o, titles.get(o, ""), before[o], after[o], gained[o], lost[o])
        for o in before.keys() | after.keys()
    ]
    deltas.sort(key=lambda d: (-(d.gained + d.lost), -abs(d.new - d.baseline), d.offer_id))
    return tuple(deltas)


def _rule_deltas(
    old: Run, new: Run, old_rules: CompiledRuleset, new_rules: CompiledRuleset
) -> tuple[RuleDelta, ...]:
    before, after = Counter(old.rule_ids), Counter(new.rule_ids)
    # New ruleset's order first, then rules the new one dropped; default last.
    ids = [r.id for r in new_rules.routes]
    known = set(ids)
    ids += [r.id for r in old_rules.routes if r.id not in known]
    ids.append("default")
    return tuple(RuleDelta(r, before[r], after[r]) for r in ids)


def simulate(
    ruleset: CompiledRuleset,
    population: Population,
    *,
    now: float,
    rules_dir: str = "",
    baseline: CompiledRuleset | None = None,
    baseline_dir: str = "",
    progress: ProgressCallback | None = None,
) -> Report:
    """Run the population through the new ruleset (and the baseline) and compare."""
    new_run = run(ruleset, population, now=now, label="new", progress=progress)
    new = summarize(ruleset, new_run, rules_dir)
    old: Outcome | None = None
    diff: Diff | None = None
    if baseline is not None:
        old_run = run(baseline, population, now=now, label="baseline", progress=progress)
        old = summarize(baseline, old_run, baseline_dir)
        diff = compare(
            old_run, new_run, population.customer_ids, old_rules=baseline, new_rules=ruleset
        )
    return Report(
        now=now,
        population=population.source,
        customers=len(population),
        bad_lines=population.bad_lines,
        warnings=population.warnings,
        new=new,
        baseline=old,
        diff=diff,
    )


# --- output -------------------------------------------------------------------------------


def report_json(report: Report) -> dict[str, Any]:
    """The report as plain JSON-ready data."""
    out: dict[str, Any] = {
        "now": _iso(report.now),
        "population": {
            "source": report.population,
            "customers": report.customers,
            "bad_lines": [
                {"file": b.file, "line": b.line, "reason": b.reason} for b in report.bad_lines
            ],
            "warnings": list(report.warnings),
        },
        "new": _outcome_json(report.new),
        "baseline": _outcome_json(report.baseline) if report.baseline else None,
        "diff": _diff_json(report.diff) if report.diff else None,
    }
    return out


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "rules_dir": outcome.rules_dir,
        "version": outcome.version,
        "label": outcome.label,
        "decisions": outcome.decisions,
        "seconds": round(outcome.seconds, 6),
        "decisions_per_second": round(outcome.decisions_per_second, 1),
        "queues": [_share_json(s) for s in outcome.queues],
        "routing_rules": [_share_json(s) for s in outcome.routing_rules],
        "offers": [_share_json(s) for s in outcome.offers],
        "no_offer": outcome.no_offer,
        "expected_value": {
            "first_offer": {"total": outcome.first_offer_ev, "mean": outcome.first_offer_ev_mean},
            "all_offers": {"total": outcome.all_offers_ev, "mean": outcome.all_offers_ev_mean},
        },
    }


def _share_json(share: Share) -> dict[str, Any]:
    out: dict[str, Any] = {"id": share.key, "count": share.count, "share": share.share}
    if share.title:
        out["title"] = share.title
    return out


def _diff_json(diff: Diff) -> dict[str, Any]:
    return {
        "changed": diff.changed,
        "routing_changed": diff.routing_changed,
        "offers_changed": diff.offers_changed,
        "changed_customers": list(diff.changed_customers),
        "transitions": [
            {"from": t.before, "to": t.after, "count": t.count} for t in diff.transitions
        ],
        "offers": [
            {
                "id": d.offer_id,
                "title": d.title,
                "baseline": d.baseline,
                "new": d.new,
                "gained": d.gained,
                "lost": d.lost,
            }
            for d in diff.offers
        ],
        "top_changes": [
            {"baseline": list(c.before), "new": list(c.after), "count": c.count}
            for c in diff.top_changes
        ],
        "routing_rules": [
            {"id": r.rule_id, "baseline": r.baseline, "new": r.new} for r in diff.routing_rules
        ],
    }


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat()


def print_report(report: Report, console: Console, *, top: int = 25) -> None:
    """Readable tables: routing, rules, offers, value, and the changes."""
    new, old = report.new, report.baseline
    console.print(_heading(report))
    console.print(_queue_table(new, old))
    console.print(_rule_table(report))
    console.print(_offer_table(report, top))
    console.print(_value_table(new, old))
    if report.diff is not None:
        _print_diff(report.diff, report.customers, console, top)


def _heading(report: Report) -> str:
    lines = [
        f"[bold]Simulation[/] at {_iso(report.now)}: {report.customers:,} customers, "
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


def _pct(share: float) -> str:
    return f"{share:.1%}"


def _money(value: float) -> str:
    return f"EUR {value:,.0f}" if abs(value) >= 100 else f"EUR {value:,.2f}"


def _signed(n: int) -> str:
    return f"{n:+,}" if n else "0"


def _queue_table(new: Outcome, old: Outcome | None) -> Table:
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
            row.append(f"{b.count:,} ({_pct(b.share)})")
        row += [f"{a.count:,}", _pct(a.share)]
        if old:
            row.append(_signed(a.count - b.count))
        table.add_row(*row)
    return table


def _rule_table(report: Report) -> Table:
    table = Table(title="Routing rule that won", title_justify="left")
    table.add_column("rule")
    if report.diff is not None:
        table.add_column("baseline", justify="right")
        table.add_column("new", justify="right")
        table.add_column("change", justify="right")
        for r in report.diff.routing_rules:
            table.add_row(r.rule_id, f"{r.baseline:,}", f"{r.new:,}", _signed(r.new - r.baseline))
        return table
    table.add_column("customers", justify="right")
    table.add_column("share", justify="right")
    for s in report.new.routing_rules:
        table.add_row(s.key, f"{s.count:,}", _pct(s.share))
    return table


def _offer_table(report: Report, top: int) -> Table:
    new, diff = report.new, report.diff
    table = Table(title="Offers shown (customers who see the offer)", title_justify="left")
    table.add_column("offer")
    if diff is not None:
        for name in ("baseline", "new", "gained", "lost"):
            table.add_column(name, justify="right")
        for d in diff.offers[:top]:
            table.add_row(
                d.offer_id, f"{d.baseline:,}", f"{d.new:,}", _signed(d.gained), _signed(-d.lost)
            )
        hidden = len(diff.offers) - top
    else:
        table.add_column("customers", justify="right")
        table.add_column("share", justify="right")
        shown = [s for s in new.offers if s.count]
        for s in shown[:top]:
            table.add_row(s.key, f"{s.count:,}", _pct(s.share))
        hidden = len(shown) - top
    if hidden > 0:
        table.caption = f"… and {hidden:,} more (--json lists every offer)"
    never = sum(1 for s in new.offers if not s.count)
    if never:
        table.caption = (table.caption + "; " if table.caption else "") + (
            f"{never:,} offer(s) never shown"
        )
    return table


def _value_table(new: Outcome, old: Outcome | None) -> Table:
    table = Table(title="Expected value (mean is per customer)", title_justify="left")
    table.add_column("")
    columns = [("baseline", old), ("new", new)] if old else [("new", new)]
    for name, _ in columns:
        table.add_column(name, justify="right")
    rows: list[tuple[str, Callable[[Outcome], str]]] = [
        ("first offer, total", lambda o: _money(o.first_offer_ev)),
        ("first offer, mean", lambda o: _money(o.first_offer_ev_mean)),
        ("all offers shown, total", lambda o: _money(o.all_offers_ev)),
        ("all offers shown, mean", lambda o: _money(o.all_offers_ev_mean)),
        ("customers with no offer", lambda o: f"{o.no_offer:,} ({_pct(o.no_offer / o.decisions)})"),
    ]
    for label, cell in rows:
        table.add_row(label, *[cell(o) for _, o in columns if o is not None])
    return table


def _print_diff(diff: Diff, customers: int, console: Console, top: int) -> None:
    console.print(
        f"[bold]{diff.changed:,}[/] of {customers:,} decisions change "
        f"({_pct(diff.changed / customers if customers else 0.0)}): "
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
            table.add_row(_offer_list(c.before), _offer_list(c.after), f"{c.count:,}")
        console.print(table)


def _offer_list(ids: Iterable[str]) -> str:
    return ", ".join(ids) or "(none)"


# --- command ------------------------------------------------------------------------------


def _load(directory: Path, what: str) -> CompiledRuleset:
    try:
        return load_compiled(directory)
    except RulesetError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(
            f"{len(exc.problems)} problem(s) in the {what} ruleset {directory}; cannot simulate",
            err=True,
        )
        sys.exit(2)


def parse_now(text: str | None) -> float:
    """Epoch seconds of an ISO date or time (UTC when no offset); now when not given."""
    if not text:
        return time.time()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"not an ISO date or time: {text!r}", param_hint="--now") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _population(ruleset: CompiledRuleset, options: Mapping[str, Any], now: float) -> Population:
    schema = profile_schema(ruleset)
    intents = declared_intents(ruleset)
    seed: int = options["seed"]
    path: Path | None = options["profiles"]
    try:
        if path is not None:
            profiles = read_profiles(path, schema)
        else:
            count = DEFAULT_COUNT if options["count"] is None else options["count"]
            today = datetime.fromtimestamp(now, UTC).date()
            profiles = generated_profiles(count, seed=seed, today=today, schema=schema)
        contexts_path: Path | None = options["contexts"]
        contexts = read_contexts(contexts_path, intents, now=now) if contexts_path else None
    except ProfileImportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    return build_population(profiles, intents, now=now, seed=seed, contexts=contexts)


def _report_problems(population: Population) -> None:
    for bad in population.bad_lines[:MAX_LISTED_ERRORS]:
        click.echo(str(bad), err=True)
    extra = len(population.bad_lines) - MAX_LISTED_ERRORS
    if extra > 0:
        click.echo(f"… and {extra:,} more bad line(s)", err=True)
    if population.bad_lines:
        click.echo(f"{len(population.bad_lines):,} bad line(s) skipped", err=True)
    for warning in population.warnings:
        click.echo(f"warning: {warning}", err=True)


def _run_with_progress(
    ruleset: CompiledRuleset,
    baseline: CompiledRuleset | None,
    population: Population,
    now: float,
    options: Mapping[str, Any],
) -> Report:
    with Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:
        tasks = {"new": bar.add_task("new", total=len(population))}
        if baseline is not None:
            tasks["baseline"] = bar.add_task("baseline", total=len(population))
        return simulate(
            ruleset,
            population,
            now=now,
            rules_dir=str(options["rules"]),
            baseline=baseline,
            baseline_dir=str(options["baseline"] or ""),
            progress=lambda label, done: bar.update(tasks[label], completed=done),
        )


@click.command("simulate")
@click.option(
    "--rules",
    type=click.Path(path_type=Path),
    default=Path("rules"),
    envvar=setting_option("rules_dir").env,
    show_default=True,
    show_envvar=True,
    help="Rules directory to simulate.",
)
@click.option(
    "--profiles",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Customers as JSON Lines or CSV (the import format). Default: generated.",
)
@click.option(
    "--contexts",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON Lines contexts (channel, intent, sentiment, attributes, customer_id).",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    help=f"Customers to generate when no --profiles [default: {DEFAULT_COUNT}].",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of generated data.")
@click.option("--now", "now_text", metavar="ISO", help="Instant of the decisions [default: now].")
@click.option(
    "--baseline",
    type=click.Path(path_type=Path),
    help="Rules directory to compare with (the one live today).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--html",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write a self-contained HTML report with charts.",
)
def simulate_command(**options: Any) -> None:
    """What-if: run a population through a ruleset (and compare with a baseline)."""
    # Read the clock once: the core reads none, and both rulesets see the same instant.
    now = parse_now(options["now_text"])
    if options["profiles"] is not None and options["count"] is not None:
        raise click.UsageError("--count applies only to generated customers (no --profiles)")
    ruleset = _load(options["rules"], "new")
    baseline = _load(options["baseline"], "baseline") if options["baseline"] else None
    population = _population(ruleset, options, now)
    _report_problems(population)
    if not len(population):
        click.echo("error: no customers to simulate", err=True)
        sys.exit(1)
    report = _run_with_progress(ruleset, baseline, population, now, options)
    if options["as_json"]:
        click.echo(json.dumps(report_json(report), indent=2))
    else:
        print_report(report, Console())
    if options["html"] is not None:
        options["html"].write_text(render_html(report), encoding="utf-8")
        click.echo(f"wrote {options['html']}", err=True)
