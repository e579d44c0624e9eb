"""The words every layer shares: channels, outcomes, what an id is made of.

The bottom of the package: it imports nothing of ours, so rules, the decision core, the
store, the server and the clients can all use it without importing one another.
"""

from __future__ import annotations

import re

CHANNELS = ("voice", "chat", "email", "sms", "web", "app", "social")
"""Where an interaction happens; the proto's Channel enum names them CHANNEL_<NAME>."""

OFFER_OUTCOMES = ("presented", "accepted", "declined", "no_response")
"""What can happen to an offer shown to a customer."""
INTERACTION_OUTCOMES = ("resolved", "not_resolved")
"""What can happen to the interaction itself (no offer id)."""

ID_PATTERN = re.compile(r"[A-Za-z0-9_.:@/+=-]+")
"""What customer, interaction and offer ids are made of. Ids are stored inside
`|`- and `;`-separated entries and inside Redis keys whose hash tag is `{customer}`,
so the separators, braces, spaces and control characters can never be part of one."""
ID_CHARACTERS = "ASCII letters, digits and - _ . : @ / + ="
MAX_ID_LENGTH = 128


def id_problem(value: str, *, limit: int = MAX_ID_LENGTH) -> str | None:
    """Why `value` cannot be an id, or None when it can."""
    if len(value) > limit:
        return f"at most {limit} characters, got {len(value)}"
    if ID_PATTERN.fullmatch(value) is None:
        bad = next((c for c in value if ID_PATTERN.fullmatch(c) is None), "")
        found = f"; found {bad!r}" if bad else ""
        return f"may contain only {ID_CHARACTERS}{found}"
    return None
