"""Prometheus metrics, in multiprocess mode so every worker is counted.

Import this module only after `PROMETHEUS_MULTIPROC_DIR` is set (process.py does),
since prometheus_client picks its storage when a metric is created. Label values
are bounded by the ruleset (queues, offer ids) or by the code (fields); never
customer ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip

DECISION_LATENCY = Histogram(
    "decision_latency_seconds",
    "Time to answer Decide, from request to response, in seconds.",
    buckets=LATENCY_BUCKETS,
)
DECISIONS = Counter("decisions_total", "Decisions made, by routing queue.", ["queue", "degraded"])
OFFERS_RETURNED = Counter("offers_returned_total", "Offers returned, by offer id.", ["offer_id"])
PROFILE_MISSES = Counter("profile_misses_total", "Decide calls for customers without a profile.")
REDIS_ERRORS = Counter(
    "redis_errors_total",
    "Profile reads that failed (error), ran out of time (timeout), or ran out of time "
    "because the worker was too busy to run them (overloaded: not a Redis problem).",
    ["kind"],
)
INVALID_REQUESTS = Counter(
    "invalid_requests_total", "Requests rejected with INVALID_ARGUMENT, by field.", ["field"]
)
RULESET_INFO = Gauge(
    "ruleset_info",
    "The ruleset version being served (1) by the workers.",
    ["version", "label"],
    multiprocess_mode="livemax",
)
RULES_LOADED = Gauge(
    "ruleset_rules",
    "Rules in the ruleset being served, per experiment arm.",
    ["arm", "kind"],
    multiprocess_mode="livemax",
)
RELOADS = Counter("ruleset_reloads_total", "Rule changes that went live (per worker).")
RELOAD_FAILURES = Counter(
    "ruleset_reload_failures_total", "Rule changes rejected because they did not check."
)
OUTCOMES = Counter(
    "outcomes_total", "Outcomes recorded, by offer and outcome.", ["offer_id", "outcome"]
)
SUPPRESSIONS = Counter(
    "suppressions_total",
    "Decisions where a contact policy or cap kept a candidate offer out, by policy.",
    ["policy"],
)
STORED_ENTRIES_SKIPPED = Counter(
    "stored_entries_skipped_total",
    "Stored entries that do not parse, left out of decisions, by kind.",
    ["kind"],
)
CONTACTS_NOT_RECORDED = Counter(
    "contacts_not_recorded_total",
    "Interactions not recorded because the customer reached the daily contact limit.",
)
CAP_EXHAUSTED = Counter(
    "cap_exhausted_total",
    "Capped offers not returned because the day's budget was spent.",
    ["offer_id"],
)
OFFER_PROPENSITY = Gauge(
    "offer_propensity",
    "Learned acceptance rate (posterior mean) per offer, when the ruleset learns.",
    ["offer_id"],
    multiprocess_mode="livemax",
)
DECISIONS_BY_ARM = Counter("decisions_by_arm_total", "Decisions by experiment arm.", ["arm"])
OUTCOMES_BY_ARM = Counter(
    "outcomes_by_arm_total", "Outcomes recorded, by experiment arm and outcome.", ["arm", "outcome"]
)
AUTH_FAILURES = Counter(
    "auth_failures_total",
    "Calls refused for their credential (UNAUTHENTICATED, PERMISSION_DENIED), by method "
    "and reason; never by token.",
    ["method", "reason"],
)
MALFORMED_REQUESTS = Counter(
    "malformed_requests_total",
    "Requests whose message did not parse (answered INVALID_ARGUMENT), by method.",
    ["method"],
)
INTERNAL_ERRORS = Counter(
    "internal_errors_total", "Calls that failed on a bug (INTERNAL), by method.", ["method"]
)
OUTCOMES_RECONCILED = Counter(
    "outcomes_reconciled_total",
    "Outcomes applied by the reconciler: logged, but not applied when they were recorded.",
)
REQUESTS_SHED = Counter(
    "requests_shed_total",
    "Calls answered at once without being served: RESOURCE_EXHAUSTED (reason in_flight: "
    "the worker is full) or DEADLINE_EXCEEDED (reason deadline: the caller gave up).",
    ["method", "reason"],
)
