"""Redis key names.

Every key of one customer carries the same hash tag (`{customer_id}`), so in Redis
Cluster they live in one slot and the load script may touch them together.
"""

from __future__ import annotations

PREFIX = "nba"
DEMO_MARKER = f"{PREFIX}:demo:loaded"
"""Set once the demo data has been loaded."""


def profile_key(customer_id: str) -> str:
    """Hash of raw profile fields."""
    return f"{PREFIX}:{{{customer_id}}}:profile"


def contacts_key(customer_id: str) -> str:
    """Hash of recent contacts: interaction_id -> "<epoch_seconds>|<channel>|<intent>"."""
    return f"{PREFIX}:{{{customer_id}}}:contacts"


def history_key(customer_id: str) -> str:
    """Outcomes of offers shown to the customer: offer id → `at|outcome|interaction;...`."""
    return f"{PREFIX}:{{{customer_id}}}:history"


def cap_key(offer_id: str, day: str) -> str:
    """How many units of a capped offer's budget were taken on a UTC day (YYYYMMDD)."""
    return f"{PREFIX}:cap:{offer_id}:{day}"


def customer_caps_key(customer_id: str, day: str) -> str:
    """Hash of the units of capped offers one customer got on a UTC day: offer id → count."""
    return f"{PREFIX}:{{{customer_id}}}:caps:{day}"


OUTCOME_STREAM = f"{PREFIX}:outcomes"
OFFER_STATS = f"{PREFIX}:offer-stats"
LEARNING = f"{PREFIX}:learning"
"""Decayed accepted / not accepted counts per offer (and per offer and segment)."""
ARM_STATS = f"{PREFIX}:arm-stats"
"""Per experiment arm: decisions, and interaction outcomes (`arm|resolved`)."""
APPLIED_CURSOR = f"{PREFIX}:outcomes:applied-cursor"
"""The id of the outcome log entry up to which every outcome is applied (decision Redis)."""
RECONCILER_LEASE = f"{PREFIX}:outcomes:reconciler"
"""Held by the one reconciler working at a time (decision Redis)."""
