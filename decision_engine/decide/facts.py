"""Turn a customer's stored state and the live context into typed facts for the rules."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from decision_engine.decide.values import Context, CustomerState
from decision_engine.ruleset.compiled import CompiledRuleset, OutcomeLookup
from decision_engine.ruleset.fields import CONTACT_WINDOW_DAYS
from decision_engine.ruleset.runtime import TODAY

_DAY = 86_400.0


def today_ordinal(now: float) -> int:
    """The UTC calendar day of `now`, as a date ordinal."""
    return datetime.fromtimestamp(now, UTC).date().toordinal()


def build_facts(
    ruleset: CompiledRuleset,
    state: CustomerState | None,
    context: Context,
    *,
    now: float,
    interaction_id: str = "",
) -> dict[str, Any]:
    """Typed values by field name; absent or unparseable values are left out."""
    return typed_facts(ruleset, state, context, now=now, interaction_id=interaction_id)[0]


def typed_facts(
    ruleset: CompiledRuleset,
    state: CustomerState | None,
    context: Context,
    *,
    now: float,
    interaction_id: str = "",
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The facts, and the profile fields left out because their stored value does not
    fit the schema (data written around the import, or by an older schema)."""
    unparsed: list[str] = []
    today = today_ordinal(now)
    facts: dict[str, Any] = {TODAY: today, "channel": context.channel}
    profile = state.profile if state is not None else None
    facts["profile_found"] = profile is not None
    if profile is not None:
        add_profile_facts(facts, ruleset, profile, today, unparsed)
    if context.intent:
        facts["intent"] = context.intent
    if context.queue:
        facts["queue"] = context.queue
    if context.agent_id:
        facts["agent_id"] = context.agent_id
    if context.ivr_path:
        facts["ivr_path"] = context.ivr_path
    if context.sentiment is not None:
        facts["sentiment"] = context.sentiment
    if context.attributes:
        for name, parser in ruleset.attribute_parsers.items():
            text = context.attributes.get(name)
            if text:
                try:
                    facts[name] = parser(text)
                except ValueError:
                    continue
    _contact_counts(facts, state, context, now=now, interaction_id=interaction_id)
    if ruleset.outcome_lookups and state is not None and state.history:
        _outcome_days(facts, state, ruleset.outcome_lookups, now=now)
    if ruleset.notice_lookups and state is not None and state.notices:
        for key, notice_id in ruleset.notice_lookups:
            record = state.notices.get(notice_id)
            if record is not None and record.reached:
                facts[key] = max(now - record.at, 0.0) / _DAY
    return facts, tuple(unparsed)


def add_profile_facts(
    facts: dict[str, Any],
    ruleset: CompiledRuleset,
    profile: Mapping[str, str],
    today: int,
    unparsed: list[str],
) -> None:
    """The profile's typed values, and the facts derived from them (days_to_contract_end)."""
    parsers = ruleset.profile_parsers
    for name, raw in profile.items():
        parser = parsers.get(name)
        if parser is None or raw == "":
            continue
        try:
            facts[name] = parser(raw)
        except ValueError:
            unparsed.append(name)
    contract_end = facts.get("contract_end")
    if contract_end is not None and "contract_end" in ruleset.date_fields:
        facts["days_to_contract_end"] = contract_end - today


def _outcome_days(
    facts: dict[str, Any],
    state: CustomerState,
    lookups: tuple[OutcomeLookup, ...],
    *,
    now: float,
) -> None:
    """days_since_outcome(): days since the latest matching outcome in the offer history
    the contact policies read; left out (absent) when there is none."""
    history = state.history
    for lookup in lookups:
        latest: float | None = None
        # The customer's few offers, not every offer of the lookup's category.
        for offer_id, events in history.items():
            if offer_id not in lookup.offers:
                continue
            for event in events:
                if lookup.outcome is not None and event.outcome != lookup.outcome:
                    continue
                if latest is None or event.at > latest:
                    latest = event.at
        if latest is not None:
            # An outcome stamped a little ahead of our clock (desktop clock skew) is now.
            facts[lookup.key] = max(now - latest, 0.0) / _DAY


def _contact_counts(
    facts: dict[str, Any],
    state: CustomerState | None,
    context: Context,
    *,
    now: float,
    interaction_id: str,
) -> None:
    """Counts over the contact window, the current interaction included exactly once."""
    since = now - CONTACT_WINDOW_DAYS * _DAY
    count, same_intent, channels = 1, 1, {context.channel}
    if state is not None:
        for contact in state.contacts:
            if contact.at < since or (interaction_id and contact.interaction_id == interaction_id):
                continue
            count += 1
            channels.add(contact.channel)
            if contact.intent == context.intent:
                same_intent += 1
    facts["contacts_7d"] = count
    facts["contacts_same_intent_7d"] = same_intent
    facts["channels_7d"] = len(channels)
