"""Contact policies: which offers this customer must not hear again yet. Pure."""

from __future__ import annotations

from collections.abc import Mapping

from decision_engine.decide.values import OfferEvent
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.ruleset.spec import ContactPolicy, Limit

_DAY = 86_400.0


class Blocked:
    """Offers kept out, and why: by offer (caps) and by contact scope (policies)."""

    __slots__ = ("by_offer", "by_scope", "mask")

    def __init__(self) -> None:
        self.by_offer: dict[str, tuple[str, str]] = {}
        """offer id → (cap, why), for capped offers."""
        self.by_scope: list[tuple[frozenset[str], str, str]] = []
        """(offers, policy id, why), in policy order: the first that covers an offer wins."""
        self.mask = 0
        """The bits of every offer kept out."""

    def why(self, offer_id: str) -> tuple[str, str] | None:
        """(policy or cap id, why) for an offer kept out; None for one that is not."""
        found = self.by_offer.get(offer_id)
        if found is None:
            for offers, policy_id, why in self.by_scope:
                if offer_id in offers:
                    return policy_id, why
        return found


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
    blocked = Blocked()
    bits = ruleset.offer_bits
    for offer_id in customer_spent:
        cap = ruleset.daily_caps.get(offer_id)
        if cap is not None:
            blocked.by_offer[offer_id] = (
                f"{offer_id}/daily-cap-per-customer",
                f"given to this customer today (at most {cap.per_customer} per customer per day)",
            )
            blocked.mask |= 1 << bits[offer_id]
    for offer_id in exhausted:
        cap = ruleset.daily_caps.get(offer_id)
        if cap is not None:
            blocked.by_offer.setdefault(
                offer_id, (f"{offer_id}/daily-cap", f"daily cap of {cap.total} reached")
            )
            blocked.mask |= 1 << bits[offer_id]
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
    # From the customer's history (a few offers) to the scopes it touches, not from
    # every scope's offers (a category can hold thousands) to the history.
    touched: dict[int, list[OfferEvent]] = {}
    scopes_by_offer = ruleset.scopes_by_offer
    for offer_id, offer_events in history.items():
        for k in scopes_by_offer.get(offer_id, ()):
            touched.setdefault(k, []).extend(offer_events)
    for k in sorted(touched):
        scope = ruleset.contact_scopes[k]
        why = _why_blocked(scope.policy, sorted(touched[k], key=lambda e: e.at), now)
        if why is not None:
            blocked.by_scope.append((scope.offers, scope.policy.id, why))
            blocked.mask |= scope.mask
    return blocked, presented_here


def _why_blocked(policy: ContactPolicy, events: list[OfferEvent], now: float) -> str | None:
    why = _declined(policy, events, now)
    if why is None and policy.max_presentations is not None:
        limit = policy.max_presentations
        shown = [e for e in events if e.outcome == "presented" and now - e.at <= limit.days * _DAY]
        if len(shown) >= limit.count:
            why = f"presented {len(shown)} times in {limit.days:g} days (at most {limit.count})"
    if why is None and policy.max_acceptances is not None:
        why = _accepted(policy.max_acceptances, events, now)
    return why


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
