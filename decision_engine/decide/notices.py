"""Which notices a business event sends one customer, on which channel, when. Pure.

The store passes in what the customer was already sent (for deduplication and the
frequency caps) and writes the plans it gets back atomically, re-planning if that
history changed in between, so this is the one place these rules are applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from decision_engine.decide.facts import add_profile_facts, today_ordinal
from decision_engine.ruleset.compiled import CompiledNotice, CompiledRuleset
from decision_engine.ruleset.runtime import TODAY, first_failure
from decision_engine.ruleset.spec import NoticeRules, NoticeSpec, QuietHours

_DAY = 86_400.0

SEND, HELD, SUPPRESSED = "send", "held", "suppressed"
_NO_EXTRA: Mapping[str, Any] = {}
"""Notices have no params: their texts see the facts only."""
REASONS = ("conditions", "no_channel", "no_consent", "dedupe", "cap", "quiet_hours")
"""Why a notice is not sent now: suppressed for all but quiet_hours, which holds it."""


@dataclass(frozen=True, slots=True)
class BusinessEvent:
    """Something that happened to a customer (or to an audience of them)."""

    event_id: str
    type: str
    occurred_at: float
    attributes: Mapping[str, str]
    customer_id: str = ""
    audience: tuple[str, str] | None = None
    """(profile field, value): every customer with that value, instead of one customer."""


@dataclass(frozen=True, slots=True)
class SentNotice:
    """A notice already decided for this customer (queued, held or sent)."""

    notice_id: str
    dedupe_key: str
    at: float
    urgent: bool


@dataclass(frozen=True, slots=True)
class NoticePlan:
    """What one notice rule does with one event for one customer."""

    notice_id: str
    status: str
    """SEND (now), HELD (until `not_before`) or SUPPRESSED (never, `reason` says why)."""
    reason: str = ""
    detail: str = ""
    channel: str = ""
    address: str = ""
    subject: str = ""
    text: str = ""
    urgent: bool = False
    not_before: float = 0.0
    dedupe_key: str = ""


def event_problem(ruleset: CompiledRuleset, event: BusinessEvent) -> tuple[str, str] | None:
    """(field, reason) when the ruleset cannot take the event: an undeclared type, audience
    field or attribute, or a value that does not fit its declaration."""
    rules = ruleset.source.notices
    declared = rules.events if rules is not None else {}
    event_type = declared.get(event.type)
    if event_type is None:
        names = ", ".join(declared) or "none: the ruleset has no notices section"
        return "type", f"{event.type[:64]!r} is not a declared event type (declared: {names})"
    if bool(event.customer_id) == (event.audience is not None):
        return "customer_id", "give exactly one of customer_id and audience"
    if event.audience is not None:
        audiences = rules.audiences if rules is not None else ()
        if event.audience[0] not in audiences:
            return "audience.field", (
                f"{event.audience[0][:64]!r} is not an audience field "
                f"(notices: audiences: {', '.join(audiences) or 'none'})"
            )
        if not event.audience[1]:
            return "audience.value", "is required"
    for key, value in event.attributes.items():
        spec = event_type.attributes.get(key)
        if spec is None:
            names = ", ".join(event_type.attributes) or "none"
            return (
                f"attributes[{key[:64]}]",
                f"is not declared for {event.type} (declared: {names})",
            )
        try:
            spec.parse(value)
        except ValueError as exc:
            return f"attributes[{key[:64]}]", str(exc).removeprefix(f"{key}: ")
    return None


def event_facts(
    ruleset: CompiledRuleset,
    event: BusinessEvent,
    profile: Mapping[str, str] | None,
    *,
    now: float,
) -> dict[str, Any]:
    """Typed facts of the customer's profile and the event's attributes."""
    today = today_ordinal(now)
    facts: dict[str, Any] = {TODAY: today}
    if profile is not None:
        add_profile_facts(facts, ruleset, profile, today, [])
    for name, parser in ruleset.event_parsers.get(event.type, {}).items():
        raw = event.attributes.get(name)
        if raw:
            try:
                facts[name] = parser(raw)
            except ValueError:
                continue
    return facts


def plan_notices(
    ruleset: CompiledRuleset,
    event: BusinessEvent,
    profile: Mapping[str, str] | None,
    sent: Sequence[SentNotice],
    *,
    now: float,
) -> list[NoticePlan]:
    """One plan per notice rule on this event type, in file order."""
    rules = ruleset.source.notices
    notices = ruleset.notices_on.get(event.type, ())
    if rules is None or not notices:
        return []
    facts = event_facts(ruleset, event, profile, now=now)
    raw = profile or {}
    history = list(sent)
    plans = []
    for notice in notices:
        plan = _plan(ruleset, rules, notice, facts, raw, history, now)
        plans.append(plan)
        if plan.status != SUPPRESSED:
            history.append(SentNotice(plan.notice_id, plan.dedupe_key, now, plan.urgent))
    return plans


def _plan(
    ruleset: CompiledRuleset,
    rules: NoticeRules,
    notice: CompiledNotice,
    facts: Mapping[str, Any],
    profile: Mapping[str, str],
    history: Sequence[SentNotice],
    now: float,
) -> NoticePlan:
    spec = notice.spec
    if notice.test(facts) is not True:
        why = first_failure(notice.checks, facts) or "its conditions do not hold"
        return NoticePlan(spec.id, SUPPRESSED, "conditions", why)
    key = notice.dedupe_key(facts, _NO_EXTRA) if notice.dedupe_key else ""
    for earlier in history:
        if (
            earlier.notice_id == spec.id
            and earlier.dedupe_key == key
            and now - earlier.at < spec.dedupe_within
        ):
            ago = max(now - earlier.at, 0.0) / 3600
            return NoticePlan(
                spec.id, SUPPRESSED, "dedupe", f"already sent {ago:.1f} h ago", dedupe_key=key
            )
    if not spec.urgent:
        capped = _capped(rules, history, now)
        if capped:
            return NoticePlan(spec.id, SUPPRESSED, "cap", capped, dedupe_key=key)
    channel, why_not = _channel(rules, spec, profile, facts)
    if channel is None:
        return NoticePlan(spec.id, SUPPRESSED, why_not[0], why_not[1], dedupe_key=key)
    subject, text = notice.texts[channel]
    plan = NoticePlan(
        spec.id,
        SEND,
        channel=channel,
        address=profile[rules.channels[channel].address].strip(),
        subject=subject(facts, _NO_EXTRA) if subject is not None else "",
        text=text(facts, _NO_EXTRA),
        urgent=spec.urgent,
        not_before=now,
        dedupe_key=key,
    )
    if spec.urgent or rules.quiet_hours is None:
        return plan
    zone = _zone(profile.get(rules.timezone_field or "", ""), rules.default_timezone)
    opens = quiet_until(rules.quiet_hours, zone, now)
    if opens is None:
        return plan
    local = datetime.fromtimestamp(opens, zone).strftime("%H:%M %Z")
    return _replace_held(plan, opens, f"quiet hours; held until {local}")


def _replace_held(plan: NoticePlan, opens: float, detail: str) -> NoticePlan:
    return NoticePlan(
        plan.notice_id,
        HELD,
        "quiet_hours",
        detail,
        plan.channel,
        plan.address,
        plan.subject,
        plan.text,
        plan.urgent,
        opens,
        plan.dedupe_key,
    )


def _capped(rules: NoticeRules, history: Sequence[SentNotice], now: float) -> str:
    for limit, days, what in ((rules.per_day, 1, "a day"), (rules.per_week, 7, "a week")):
        if limit is None:
            continue
        recent = sum(1 for s in history if not s.urgent and now - s.at < days * _DAY)
        if recent >= limit:
            return f"{recent} non-urgent notices in the last {days * 24} h (at most {limit} {what})"
    return ""


def _channel(
    rules: NoticeRules, spec: NoticeSpec, profile: Mapping[str, str], facts: Mapping[str, Any]
) -> tuple[str | None, tuple[str, str]]:
    """The first allowed channel with an address and consent, the preferred one first."""
    order = list(spec.channels)
    preferred = profile.get(rules.preferred or "", "") if spec.use_preferred else ""
    if preferred in order:
        order.remove(preferred)
        order.insert(0, preferred)
    refused: list[str] = []
    for name in order:
        channel = rules.channels[name]
        if not profile.get(channel.address, "").strip():
            continue
        if channel.consent is not None and facts.get(channel.consent) is not True:
            refused.append(f"{name}: no consent ({channel.consent})")
            continue
        if channel.opt_out is not None and facts.get(channel.opt_out) is True:
            refused.append(f"{name}: opted out ({channel.opt_out})")
            continue
        return name, ("", "")
    if refused:
        return None, ("no_consent", "; ".join(refused))
    return None, ("no_channel", f"no address for {', '.join(order)}")


def quiet_until(hours: QuietHours, zone: ZoneInfo, now: float) -> float | None:
    """When the quiet hours around `now` end, in the customer's zone; None outside them."""
    local = datetime.fromtimestamp(now, zone)
    minute = local.hour * 60 + local.minute
    start, end = hours.start, hours.end
    quiet = (start <= minute or minute < end) if start > end else (start <= minute < end)
    if not quiet:
        return None
    opens = local.replace(hour=end // 60, minute=end % 60, second=0, microsecond=0)
    if opens <= local:
        opens = opens + timedelta(days=1)
    # Wall-clock arithmetic across a DST change: re-attach the zone to the naive time.
    return opens.replace(tzinfo=None).replace(tzinfo=zone).timestamp()


@lru_cache(maxsize=512)
def _zone(name: str, default: str) -> ZoneInfo:
    """The customer's zone; the ruleset's default when absent or unknown."""
    try:
        return ZoneInfo(name.strip()) if name.strip() else ZoneInfo(default)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return ZoneInfo(default)
