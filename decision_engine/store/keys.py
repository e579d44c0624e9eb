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
