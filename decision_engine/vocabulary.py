"""The words every layer shares: channels, outcomes, what an id is made of, the events
of a live interaction and the kinds of guidance they lead to.

The bottom of the package: it imports nothing of ours, so rules, the decision core, the
store, the server and the clients can all use it without importing one another.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

CHANNELS = ("voice", "chat", "email", "sms", "web", "app", "social")
"""Where an interaction happens; the proto's Channel enum names them CHANNEL_<NAME>."""

OFFER_OUTCOMES = ("presented", "accepted", "declined", "no_response")
"""What can happen to an offer shown to a customer."""
INTERACTION_OUTCOMES = ("resolved", "not_resolved")
"""What can happen to the interaction itself (no offer id)."""

GUIDANCE_OUTCOME_PREFIX = "moment:"
"""A guidance item's outcome is recorded as one of an offer named `moment:<moment id>`,
so the agent's use of guidance counts per arm like offers do (RecordOutcome, `report`)."""


def guidance_offer_id(moment_id: str) -> str:
    """The offer id RecordOutcome takes for the guidance of `moment_id`."""
    return GUIDANCE_OUTCOME_PREFIX + moment_id


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


# -- live interactions (moments) -----------------------------------------------------------

EVENT_FIELDS: Mapping[str, tuple[str, ...]] = {
    "started": ("customer_id", "channel", "intent", "queue", "agent_id"),
    "utterance": ("speaker", "text", "keywords", "phrases"),
    "sentiment": ("value", "speaker"),
    "hold_started": (),
    "hold_ended": ("duration_s",),
    "silence": ("duration_s",),
    "ivr_step": ("step",),
    "intent_changed": ("intent",),
    "agent_action": ("action", "offer_id"),
    "ended": ("resolved",),
}
"""Every event kind and the fields its `data` may hold (all flat, so a durable_rules
event stays far below its 255-property limit). Rule files (moments) and the moment
engine read it, hence its place at the bottom."""

EVENT_KINDS = tuple(EVENT_FIELDS)
SPEAKERS = ("customer", "agent")
AGENT_ACTIONS = (
    "offer_presented",
    "offer_accepted",
    "offer_declined",
    "disclosure_read",
    "transfer_requested",
    "guidance_used",
    "guidance_dismissed",
)
GUIDANCE_KINDS = ("offer", "route", "compliance", "coaching", "knowledge", "survey")
SEVERITIES = ("info", "warning", "critical")
