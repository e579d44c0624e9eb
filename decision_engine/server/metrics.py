"""Prometheus metrics, in multiprocess mode so every worker is counted.

The metrics are made by `init_metrics()`, not at import: prometheus_client picks
where a metric keeps its values (memory, or the multiprocess directory the
supervisor serves /metrics from) when the metric is created. A worker calls it
first thing, once `PROMETHEUS_MULTIPROC_DIR` is set (bootstrap.py sets it before the
fork); anything else gets them on first use. Callers write `metrics.DECISIONS`,
looked up in the one `Metrics` of the process. Label values are bounded by the
ruleset (queues, offer ids) or by the code (fields); never customer ids.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram, values

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
GUIDANCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric the server keeps; one per process, made by `init_metrics`."""

    def __init__(self) -> None:
        self.DECISION_LATENCY = Histogram(
            "decision_latency_seconds",
            "Time to answer Decide, from request to response, in seconds.",
            buckets=LATENCY_BUCKETS,
        )
        self.DECISIONS = Counter(
            "decisions_total", "Decisions made, by routing queue.", ["queue", "degraded"]
        )
        self.OFFERS_RETURNED = Counter(
            "offers_returned_total", "Offers returned, by offer id.", ["offer_id"]
        )
        self.PROFILE_MISSES = Counter(
            "profile_misses_total", "Decide calls for customers without a profile."
        )
        self.REDIS_ERRORS = Counter(
            "redis_errors_total",
            "Profile reads that failed (error), ran out of time (timeout), or ran out of time "
            "because the worker was too busy to run them (overloaded: not a Redis problem).",
            ["kind"],
        )
        for kind in ("error", "timeout", "overloaded"):  # at 0 from the start, for rate()
            self.REDIS_ERRORS.labels(kind)
        self.INVALID_REQUESTS = Counter(
            "invalid_requests_total",
            "Requests rejected with INVALID_ARGUMENT, by field.",
            ["field"],
        )
        self.UNKNOWN_ATTRIBUTES = Counter(
            "unknown_attributes_total",
            "Context attributes of Decide requests that the schema does not declare, ignored "
            "(refused instead with unknown_attributes: reject).",
        )
        self.RULESET_INFO = Gauge(
            "ruleset_info",
            "The ruleset version being served (1) by the workers.",
            ["version", "label"],
            multiprocess_mode="livemax",
        )
        self.RULES_LOADED = Gauge(
            "ruleset_rules",
            "Rules in the ruleset being served, per experiment arm.",
            ["arm", "kind"],
            multiprocess_mode="livemax",
        )
        self.RELOADS = Counter(
            "ruleset_reloads_total",
            "Rule changes that went live: checked and announced to the workers, once per change.",
        )
        self.RELOAD_FAILURES = Counter(
            "ruleset_reload_failures_total", "Rule changes rejected because they did not check."
        )
        self.OUTCOMES = Counter(
            "outcomes_total", "Outcomes recorded, by offer and outcome.", ["offer_id", "outcome"]
        )
        self.SUPPRESSIONS = Counter(
            "suppressions_total",
            "Decisions where a contact policy or cap kept a candidate offer out, by policy.",
            ["policy"],
        )
        self.STORED_ENTRIES_SKIPPED = Counter(
            "stored_entries_skipped_total",
            "Stored entries that do not parse, left out of decisions, by kind.",
            ["kind"],
        )
        self.CONTACTS_NOT_RECORDED = Counter(
            "contacts_not_recorded_total",
            "Interactions not recorded because the customer reached the daily contact limit.",
        )
        self.CAP_EXHAUSTED = Counter(
            "cap_exhausted_total",
            "Capped offers not returned because the day's budget was spent.",
            ["offer_id"],
        )
        self.CAP_BUDGET_LEFT = Gauge(
            "cap_budget_left",
            "Units of today's budget left, per capped offer (read every few seconds).",
            ["offer_id"],
            multiprocess_mode="livemin",
        )
        self.OFFER_PROPENSITY = Gauge(
            "offer_propensity",
            "Learned acceptance rate (posterior mean) per offer, when the ruleset learns.",
            ["offer_id"],
            multiprocess_mode="livemax",
        )
        self.DECISIONS_BY_ARM = Counter(
            "decisions_by_arm_total", "Decisions by experiment arm.", ["arm"]
        )
        self.OUTCOMES_BY_ARM = Counter(
            "outcomes_by_arm_total",
            "Outcomes recorded, by experiment arm and outcome.",
            ["arm", "outcome"],
        )
        self.AUTH_FAILURES = Counter(
            "auth_failures_total",
            "Calls refused for their credential (UNAUTHENTICATED, PERMISSION_DENIED), by method "
            "and reason; never by token.",
            ["method", "reason"],
        )
        self.MALFORMED_REQUESTS = Counter(
            "malformed_requests_total",
            "Requests whose message did not parse (answered INVALID_ARGUMENT), by method.",
            ["method"],
        )
        self.INTERNAL_ERRORS = Counter(
            "internal_errors_total", "Calls that failed on a bug (INTERNAL), by method.", ["method"]
        )
        self.OUTCOMES_RECONCILED = Counter(
            "outcomes_reconciled_total",
            "Outcomes applied by the reconciler: logged, but not applied when they were recorded.",
        )
        self.REQUESTS_SHED = Counter(
            "requests_shed_total",
            "Calls answered at once without being served: RESOURCE_EXHAUSTED (reason in_flight: "
            "the worker is full) or DEADLINE_EXCEEDED (reason deadline: the caller gave up).",
            ["method", "reason"],
        )
        self._live_guidance()

    def _live_guidance(self) -> None:
        """Live guidance: events in, moment processes, guidance out, watches. Labelled by
        event kind and moment id, never by interaction or customer."""
        self.EVENTS_RECEIVED = Counter(
            "interaction_events_total",
            "Interaction events stored (duplicates not counted), by kind.",
            ["kind"],
        )
        self.EVENTS_REFUSED = Counter(
            "interaction_events_refused_total",
            "Events refused for their interaction's state (FAILED_PRECONDITION), by reason: "
            "ended, stale_seq, restarted, held_full, held_too_long.",
            ["reason"],
        )
        self.BUSINESS_EVENTS = Counter(
            "business_events_total",
            "Business events published, by event type and status (accepted, duplicate).",
            ["type", "status"],
        )
        self.AUDIENCE_EVENTS = Counter(
            "audience_events_total", "Accepted events addressed to an audience, by type.", ["type"]
        )
        self.EVENTS_PROCESSED = Counter(
            "business_events_processed_total",
            "Business events the notice processes finished, by type and result (done, "
            "duplicate, rejected; split: an audience event made into pages; page: one done).",
            ["type", "result"],
        )
        self.NOTICES_DECIDED = Counter(
            "notices_decided_total",
            "Notices decided, by notice id, channel and status (queued, held).",
            ["notice", "channel", "status"],
        )
        self.NOTICES_SUPPRESSED = Counter(
            "notices_suppressed_total",
            "Notices not sent, by notice id and reason (conditions, no_channel, no_consent, "
            "dedupe, cap).",
            ["notice", "reason"],
        )
        self.NOTICE_RECEIPTS = Counter(
            "notice_receipts_total", "Provider receipts recorded, by status.", ["status"]
        )
        self.EVENT_LAG = Gauge(
            "business_event_lag_seconds",
            "Age of the last business event a notice process took up (published → read).",
            multiprocess_mode="livemax",
        )
        self.NOTICE_DELIVERIES = Counter(
            "notice_deliveries_total",
            "Delivery attempts, by channel, sender and result (delivered, retry, rejected, "
            "dead_lettered, already_delivered).",
            ["channel", "sender", "result"],
        )
        self.NOTICE_DELIVERY_LATENCY = Histogram(
            "notice_delivery_latency_seconds",
            "From a notice being due (decided, or released after quiet hours or a backoff) "
            "to its sender accepting it, in seconds, by channel.",
            ["channel"],
            buckets=GUIDANCE_BUCKETS,
        )
        self.NOTICE_OUTBOX_LAG = Gauge(
            "notice_outbox_lag_seconds",
            "Age of the oldest notice waiting on the outbox stream (0: delivery keeps up).",
            multiprocess_mode="livemax",
        )
        self.NOTICES_HELD = Gauge(
            "notices_held",
            "Notices held for later (quiet hours, retry backoff).",
            multiprocess_mode="livemax",
        )
        self.NOTICE_DEAD_LETTERS = Gauge(
            "notice_dead_letters",
            "Notices on the dead-letter stream (see `decision-engine notices dead-letters`).",
            multiprocess_mode="livemax",
        )
        self.PROCESS_RESTARTS = Counter(
            "process_restarts_total",
            "Processes the supervisor restarted after they died, by kind (worker, moment, notice).",
            ["kind"],
        )
        self.GUIDANCE_WRITTEN = Counter(
            "guidance_written_total", "Guidance items written, by moment.", ["moment_id"]
        )
        self.GUIDANCE_LATENCY = Histogram(
            "guidance_latency_seconds",
            "From an event's publication to the guidance it caused being written, in seconds "
            "(not for deadlines, nor on replay).",
            buckets=GUIDANCE_BUCKETS,
        )
        self.LIVE_INTERACTIONS = Gauge(
            "live_interactions",
            "Interactions the moment processes are following.",
            multiprocess_mode="livesum",
        )
        self.MOMENT_RESTARTS = Counter(
            "moment_process_restarts_total", "Moment processes restarted after they died."
        )
        self.MOMENT_REPLAYS = Counter(
            "moment_replays_total",
            "Interactions replayed from their event stream when a moment process (re)started.",
        )
        self.WATCHES_OPEN = Gauge(
            "guidance_watches_open",
            "WatchGuidance and Guide streams open.",
            multiprocess_mode="livesum",
        )


_metrics: Metrics | None = None
_lock = threading.Lock()


def init_metrics() -> Metrics:
    """The process's metrics, made on the first call (in multiprocess mode when
    `PROMETHEUS_MULTIPROC_DIR` is set by then, whenever prometheus_client was imported)."""
    global _metrics
    with _lock:
        if _metrics is None:
            multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
            if multiprocess == (values.ValueClass is values.MutexValue):
                # prometheus_client chose at its import, before the directory was set.
                values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
            _metrics = Metrics()
        return _metrics


if TYPE_CHECKING:
    # What `__getattr__` gives, for the type checker.
    DECISION_LATENCY: Histogram
    DECISIONS: Counter
    OFFERS_RETURNED: Counter
    PROFILE_MISSES: Counter
    REDIS_ERRORS: Counter
    INVALID_REQUESTS: Counter
    UNKNOWN_ATTRIBUTES: Counter
    RULESET_INFO: Gauge
    RULES_LOADED: Gauge
    RELOADS: Counter
    RELOAD_FAILURES: Counter
    OUTCOMES: Counter
    SUPPRESSIONS: Counter
    STORED_ENTRIES_SKIPPED: Counter
    CONTACTS_NOT_RECORDED: Counter
    CAP_EXHAUSTED: Counter
    CAP_BUDGET_LEFT: Gauge
    OFFER_PROPENSITY: Gauge
    DECISIONS_BY_ARM: Counter
    OUTCOMES_BY_ARM: Counter
    AUTH_FAILURES: Counter
    MALFORMED_REQUESTS: Counter
    INTERNAL_ERRORS: Counter
    OUTCOMES_RECONCILED: Counter
    REQUESTS_SHED: Counter
    EVENTS_RECEIVED: Counter
    EVENTS_REFUSED: Counter
    GUIDANCE_WRITTEN: Counter
    BUSINESS_EVENTS: Counter
    AUDIENCE_EVENTS: Counter
    EVENTS_PROCESSED: Counter
    NOTICES_DECIDED: Counter
    NOTICES_SUPPRESSED: Counter
    NOTICE_RECEIPTS: Counter
    EVENT_LAG: Gauge
    NOTICE_DELIVERIES: Counter
    PROCESS_RESTARTS: Counter
    NOTICE_DELIVERY_LATENCY: Histogram
    NOTICE_OUTBOX_LAG: Gauge
    NOTICES_HELD: Gauge
    NOTICE_DEAD_LETTERS: Gauge
    GUIDANCE_LATENCY: Histogram
    LIVE_INTERACTIONS: Gauge
    MOMENT_RESTARTS: Counter
    MOMENT_REPLAYS: Counter
    WATCHES_OPEN: Gauge
else:

    def __getattr__(name: str) -> object:
        """`metrics.DECISIONS`: the attribute of the process's `Metrics`."""
        if name.isupper():
            return getattr(init_metrics(), name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
