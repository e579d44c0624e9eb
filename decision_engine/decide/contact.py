"""Contact policies: which offers this customer must not hear again yet. Pure."""

from __future__ import annotations

from collections.abc import Mapping

from decision_engine.decide.values import OfferEvent
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.ruleset.spec import ContactPolicy, Limit

_DAY = 86_400.0

Blocked = dict[str, tuple[str, str]]
"""offer id → (policy id, why), for explanations and metrics."""


def blocked_offers(
    ruleset: CompiledRuleset,
    history: Mapping[str, tuple[OfferEvent, ...]],
    *,
    now: float,
    interaction_id: str,
    exhausted: frozenset[str],
    customer_spent: frozenset[str] = frozenset(),
) -> tuple[Blocked, int]:
    """Offers kept out by contact policies or exhausted caps (the day's budget, or this
    customer's share of it), and offers already presented in this interaction (for the
    per-interaction limit)."""
    blocked: Blocked = {}
    for offer_id in customer_spent:
        cap = ruleset.daily_caps.get(offer_id)
        if cap is not None:
            blocked[offer_id] = (
                f"{offer_id}/daily-cap-per-customer",
                f"given to this customer today (at most {cap.per_customer} per customer per day)",
            )
    for offer_id in exhausted:
        cap = ruleset.daily_caps.get(offer_id)
        if cap is not None:
            blocked.setdefault(
                offer_id, (f"{offer_id}/daily-cap", f"daily cap of {cap.total} reached")
            )
    presented_here = 0
    if not history:
        return blocked, presented_here
    if interaction_id:
        presented_here = sum(
            1
            for events in history.values()
            for e in events
            if e.outcome == "presented" and e.interaction_id == interaction_id
        )
    for scope in ruleset.contact_scopes:
        policy = scope.policy
        events = sorted(
            (e for offer_id in scope.offers for e in history.get(offer_id, ())),
            key=lambda e: e.at,
        )
        if not events:
            continue
        why = _declined(policy, events, now)
        if why is None and policy.max_presentations is not None:
            limit = policy.max_presentations
            shown = [
                e for e in events if e.outcome == "presented" and now - e.at <= limit.days * _DAY
            ]
            if len(shown) >= limit.count:
                why = f"presented {len(shown)} times in {limit.days:g} days (at most {limit.count})"
        if why is None and policy.max_acceptances is not None:
            why = _accepted(policy.max_acceptances, events, now)
        if why is not None:
            for offer_id in scope.offers:
                blocked.setdefault(offer_id, (policy.id, why))
    return blocked, presented_here


def _declined(policy: ContactPolicy, events: list[OfferEvent], now: float) -> str | None:
    declines = [e for e in events if e.outcome == "declined"]
    if not declines:
        return None
    days = policy.suppress_after_decline_days
    if days is not None:
        # A decline stamped a little ahead of our clock (desktop clock skew) is recent.
        ago = max((now - declines[-1].at) / _DAY, 0.0)
        if ago < days:
            return f"declined {ago:.1f} days ago (suppressed for {days:g} days)"
    limit = policy.max_declines
    if limit is not None:
        recent = [e for e in declines if now - e.at <= limit.days * _DAY]
        if len(recent) >= limit.count:
            return (
                f"declined {len(recent)} times in {limit.days:g} days (at most {limit.count - 1})"
            )
    return None


def _accepted(limit: Limit, events: list[OfferEvent], now: float) -> str | None:
    accepted = sum(1 for e in events if e.outcome == "accepted" and now - e.at <= limit.days * _DAY)
    if accepted < limit.count:
        return None
    times = "time" if accepted == 1 else "times"
    return f"accepted {accepted} {times} in {limit.days:g} days (at most {limit.count})"
