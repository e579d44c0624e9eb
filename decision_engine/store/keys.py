"""Redis key names.

Every key of one customer carries the same hash tag (`{customer_id}`), so in Redis
Cluster they live in one slot and the load script may touch them together; so do the
keys of one interaction (`{interaction_id}`, after `interaction:` so that they never
share a name with a customer's).
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
DECISION_SECRET = f"{PREFIX}:decision-secret"
"""The key decision ids are signed with, shared by the replicas (decision Redis)."""
RECONCILER_LEASE = f"{PREFIX}:outcomes:reconciler"
"""Held by the one reconciler working at a time (decision Redis)."""


def interaction_state_key(interaction_id: str) -> str:
    """Hash of one interaction's state: last event seq, guidance seq, started/ended, the
    customer, events held before `started`."""
    return f"{PREFIX}:interaction:{{{interaction_id}}}:state"


def interaction_events_key(interaction_id: str) -> str:
    """Stream of the interaction's events in the order they are fed to moments: the
    source of truth that a moment process replays after a restart."""
    return f"{PREFIX}:interaction:{{{interaction_id}}}:events"


def interaction_event_ids_key(interaction_id: str) -> str:
    """Hash event id → seq: an event id counts once."""
    return f"{PREFIX}:interaction:{{{interaction_id}}}:event-ids"


def guidance_key(interaction_id: str) -> str:
    """Stream of the interaction's guidance; entry id `<seq>-0`, the end marker
    `<last seq>-1`."""
    return f"{PREFIX}:interaction:{{{interaction_id}}}:guidance"


def guidance_ids_key(interaction_id: str) -> str:
    """Hash guidance id → seq: a guidance item is written once."""
    return f"{PREFIX}:interaction:{{{interaction_id}}}:guidance-ids"


def moment_work_key(shard: int) -> str:
    """Stream of work for the moment process owning `shard` (consumer group `moments`):
    `interaction`, `seq` of each event released to moments."""
    return f"{PREFIX}:moments:work:{shard}"


def moment_live_key(shard: int) -> str:
    """Set of the shard's interactions started and not yet done: what a moment process
    replays when it starts."""
    return f"{PREFIX}:moments:live:{shard}"


# -- proactive notices ---------------------------------------------------------------------
# Events, the outbox and each customer's sent notices live on the durable (outcome log)
# Redis: a notice decided must survive a crash. What Decide reads of them (the notice
# log, notice_log_key) lives with the customer's other keys on the decision Redis.

EVENTS_STREAM = f"{PREFIX}:events"
"""Business events to process: PublishEvent writes here, and so may producer systems."""
EVENTS_GROUP = "notices"
EVENTS_REJECTED = f"{PREFIX}:events:rejected"
"""Entries of the events stream that are not events of the ruleset, with the reason."""
NOTICE_OUTBOX = f"{PREFIX}:notices:outbox"
"""Notices due now, for the delivery workers (consumer group `delivery`)."""
NOTICE_HELD = f"{PREFIX}:notices:held"
"""Sorted set of notices held until their score (quiet hours, retry backoff)."""
NOTICE_DEAD = f"{PREFIX}:notices:dead"
"""Notices that could not be delivered after every attempt."""
OUTBOX_GROUP = "delivery"


def event_seen_key(event_id: str) -> str:
    """Set once per business event id: a retry of PublishEvent is a duplicate."""
    return f"{PREFIX}:event:{{{event_id}}}:seen"


def notices_sent_key(customer_id: str) -> str:
    """Sorted set of the notices decided for a customer (`notice|dedupe key|urgent|event`,
    scored by time): what deduplication and the frequency caps count."""
    return f"{PREFIX}:{{{customer_id}}}:notices:sent"


def notices_version_key(customer_id: str) -> str:
    """Bumped on every change of notices_sent_key: the planner's compare-and-set."""
    return f"{PREFIX}:{{{customer_id}}}:notices:version"


def notice_log_key(customer_id: str) -> str:
    """Hash of the customer's notices for Decide and the agent: notice id → JSON."""
    return f"{PREFIX}:{{{customer_id}}}:notices:log"


def audience_key(field: str, value: str) -> str:
    """Set of the customers whose profile `field` (an audience field) has `value`."""
    return f"{PREFIX}:audience:{field}:{value}"


def notice_key_index(key: str) -> str:
    """A notice's idempotency key → `customer|notice`, for provider receipts (30 days)."""
    return f"{PREFIX}:notice-key:{{{key}}}"


def notice_delivered_key(key: str) -> str:
    """Set once a notice of this idempotency key is delivered (30 days)."""
    return f"{PREFIX}:notice-delivered:{{{key}}}"


SWEEP_LOCK = f"{PREFIX}:notices:sweep-lock"
"""Held by the one process sweeping key dates (durable Redis)."""


def sweep_done_key(day: str) -> str:
    """Set once the key-date sweep of a UTC day (YYYY-MM-DD) has run."""
    return f"{PREFIX}:notices:swept:{day}"
