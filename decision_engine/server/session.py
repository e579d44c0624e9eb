"""One decision, free of the transport: arm, store read, learning, exploration, caps.

The servicer (service.py) turns a request into plain data and calls `decide`; this
module reads the store within the caller's deadline, picks the arm and its ruleset,
decides, and holds today's budget of every capped offer it returns.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from dataclasses import dataclass

from decision_engine.decide.context_check import check_context
from decision_engine.decide.engine import Prepared, decide, prepare
from decision_engine.decide.experiment import CHALLENGER, CONTROL, Experiment
from decision_engine.decide.learning import Learned
from decision_engine.decide.values import (
    Contact,
    Context,
    CustomerState,
    Decision,
    recent_notices,
)
from decision_engine.errors import StoreUnavailableError
from decision_engine.ruleset.compiled import CompiledRuleset, DailyCap
from decision_engine.server import metrics
from decision_engine.server.decision_ids import DecisionIds
from decision_engine.server.learning import LearnedState
from decision_engine.server.read_watch import ReadWatch
from decision_engine.server.rulesets import ActiveRuleset
from decision_engine.server.throttle import Outage
from decision_engine.store.outcomes import DecisionRecord, Reservation, release_caps, reserve_caps
from decision_engine.store.profiles import Loaded, ProfileStore, cap_day
from decision_engine.vocabulary import guidance_offer_id

# The name log lines have always carried (filters and alerts match it).
log = logging.getLogger("decision_engine.server.service")

# Leave this share of the caller's deadline for deciding and answering.
_DEADLINE_SHARE_FOR_STORE = 0.5
# A read delayed by this worker, not by Redis, may take up to this share of it.
_DEADLINE_SHARE_FOR_LATE_READ = 0.75
# A capped offer lost to another replica is replaced by deciding again, at most this often.
_CAP_ATTEMPTS = 3
_SPENT_RECHECK_S = 1.0
"""On a Redis Cluster a spent budget is found by reserving; for this long after, decisions
leave the offer out without asking (units given back may make it available again)."""
# Degraded: the store said nothing (the decision gets no state at all).
_NOTHING = CustomerState(profile=None)


def outage_log(what: str = "profile store unavailable", over: str = "profile store is back"
               ) -> Outage:  # fmt: skip
    """Decisions made from context alone while the store (or the server) cannot help."""
    return Outage(
        log,
        failing=what + " (%s); %d decision(s) made from context alone so far",
        back=over + " after %d decision(s) from context alone",
    )


class SkipLog:
    """Counts stored entries that do not parse; warns once per kind and process.

    Such an entry stays until it ages out, so it is skipped on every call of that
    customer: a warning each time would flood the log with one customer's data.
    """

    def __init__(self) -> None:
        self.warned: set[str] = set()

    def skipped(self, kind: str, count: int, customer_id: str) -> None:
        metrics.STORED_ENTRIES_SKIPPED.labels(kind).inc(count)
        log.debug("customer %s: %d stored %s entries skipped", customer_id, count, kind)
        if kind not in self.warned:
            self.warned.add(kind)
            log.warning(
                "stored %s entries that do not parse are skipped (counted in "
                'stored_entries_skipped_total{kind="%s"}; warned once per worker)',
                kind,
                kind,
            )


@dataclass(frozen=True, slots=True)
class _Inputs:
    """What one decision decides from, however often it decides (caps)."""

    ruleset: CompiledRuleset
    state: CustomerState | None
    context: Context
    now: float
    customer_id: str
    interaction_id: str
    max_offers: int
    explain: bool
    exhausted: frozenset[str]
    customer_spent: frozenset[str]
    degraded: bool
    learned: Learned | None
    sample_seed: int | None
    """Set when this decision explores (Thompson sampling); the same over cap retries."""
    prepared: Prepared
    """The facts, routing, policies and candidates: built once, however often it decides."""


class DecisionSession:
    """Decides for one interaction from the arm's ruleset and one profile-store round trip."""

    def __init__(
        self,
        rules: ActiveRuleset,
        store: ProfileStore,
        *,
        store_timeout_s: float,
        ids: DecisionIds,
        learned: LearnedState | None = None,
        challenger: ActiveRuleset | None = None,
        experiment: Experiment | None = None,
    ) -> None:
        self._rules = rules
        self._store = store
        self._learned = learned
        self._challenger = challenger
        # The challenger learns from the same counters, with its own ruleset's settings.
        self._challenger_learned = (
            learned.alongside(challenger)
            if learned is not None and challenger is not None
            else None
        )
        self._experiment = experiment or Experiment()
        self._store_timeout_s = store_timeout_s
        self._ids = ids
        self._outages = outage_log()
        self._skips = SkipLog()
        self._overloads = outage_log(
            "server overloaded, not the profile store", "server keeps up again"
        )
        self._spent: dict[str, tuple[str, float]] = {}
        """On a Redis Cluster, where the load reads no budgets: capped offers a reservation
        found spent, with the day and until when to leave them out without asking again."""
        # Exported at 0 from the start, so rate() and alerts see the series before the
        # first cap runs out (offers a reload adds start when they first run out).
        for ruleset in (rules, challenger):
            if ruleset is not None:
                for offer_id in ruleset.current.daily_caps:
                    metrics.CAP_EXHAUSTED.labels(offer_id)

    def ruleset_for(self, arm: str) -> CompiledRuleset:
        """The ruleset an arm is decided by (control is routed by the champion's)."""
        if arm == CHALLENGER and self._challenger is not None:
            return self._challenger.current
        return self._rules.current

    def _learning_for(self, arm: str) -> LearnedState | None:
        if arm == CHALLENGER and self._challenger is not None:
            return self._challenger_learned
        return self._learned

    def guidance_outcome_id(
        self, *, customer_id: str, interaction_id: str, channel: str, moment_id: str
    ) -> str:
        """A signed id for the outcome of one guidance item, in the customer's arm: the
        item stands as a decision that returned the offer `moment:<moment id>`."""
        arm = self._experiment.arm_of(customer_id)
        record = DecisionRecord(
            decision_id="",
            customer_id=customer_id,
            offer_ids=(guidance_offer_id(moment_id),),
            interaction_id=interaction_id,
            channel=channel,
            ruleset_version=self.ruleset_for(arm).version,
            arm=arm,
            at=time.time(),
        )
        return self._ids.issue(record)

    async def decide(
        self,
        *,
        customer_id: str,
        interaction_id: str,
        context: Context,
        max_offers: int,
        explain: bool,
        time_remaining: float | None,
        check: bool = False,
    ) -> Decision:
        """The final decision, its arm set and its signed id issued.

        With `check` (Decide), the context is first checked against the arm's schema
        (decide/context_check.py): InvalidRequestError before any store read. Moment
        processes decide with the context their events built, unchecked.

        `time_remaining` is what is left of the caller's deadline (None: no deadline);
        the store read gets a share of it.
        """
        arm = self._experiment.arm_of(customer_id)
        ruleset = self.ruleset_for(arm)
        if check and (ignored := check_context(ruleset, context)):
            metrics.UNKNOWN_ATTRIBUTES.inc(ignored)
        now = time.time()
        interaction = (
            Contact(interaction_id, context.channel, context.intent, now)
            if interaction_id
            else None
        )
        loaded, degraded = await self._load(
            customer_id, interaction, now, ruleset.daily_caps, time_remaining
        )
        learning = self._learning_for(arm)
        learned = learning.for_ruleset(ruleset) if learning is not None else None
        sample_seed = None
        if learned is not None:
            sample_seed = exploration_seed(
                ruleset.source.learning.exploration, customer_id, interaction_id
            )
        state = None if degraded else loaded.state
        inputs = _Inputs(
            ruleset,
            state,
            context,
            now,
            customer_id,
            interaction_id,
            max_offers,
            explain,
            loaded.exhausted | self._known_spent(now),
            loaded.customer_spent,
            degraded,
            learned,
            sample_seed,
            prepare(ruleset, state=state, context=context, now=now, interaction_id=interaction_id),
        )
        if arm == CONTROL:
            # The holdout is routed like everyone else but hears no offer.
            decision = self._decide(inputs, inputs.exhausted, inputs.customer_spent).replace(
                offers=()
            )
        else:
            decision = await self._decide_within_caps(inputs)
        record = DecisionRecord(
            decision_id="",
            customer_id=customer_id,
            offer_ids=tuple(o.offer_id for o in decision.offers),
            interaction_id=interaction_id,
            channel=context.channel,
            ruleset_version=decision.ruleset_version,
            arm=arm,
            at=now,
        )
        decision = decision.replace(
            arm=arm,
            decision_id=self._ids.issue(record),
            notices=recent_notices(state, now=now),
        )
        for kind, count in loaded.skipped.items():
            self._skips.skipped(kind, count, customer_id)
        if decision.unparsed_fields:
            self._skips.skipped("profile_field", len(decision.unparsed_fields), customer_id)
        if loaded.contact_refused:
            metrics.CONTACTS_NOT_RECORDED.inc()
        return decision

    def _decide(
        self, inputs: _Inputs, exhausted: frozenset[str], customer_spent: frozenset[str]
    ) -> Decision:
        return decide(
            inputs.ruleset,
            state=inputs.state,
            context=inputs.context,
            now=inputs.now,
            decision_id="",  # the signed id is made once the decision is final
            interaction_id=inputs.interaction_id,
            max_offers=inputs.max_offers,
            explain=inputs.explain,
            degraded=inputs.degraded,
            exhausted=exhausted,
            customer_spent=customer_spent,
            learned=inputs.learned,
            sample_seed=inputs.sample_seed,
            prepared=inputs.prepared,
        )

    async def _decide_within_caps(self, inputs: _Inputs) -> Decision:
        """Decide, holding one unit of today's budget for every capped offer returned."""
        exhausted, customer_spent = inputs.exhausted, inputs.customer_spent
        held: set[str] = set()  # capped offers whose budget this request holds
        customer_id = inputs.customer_id
        for _ in range(_CAP_ATTEMPTS):
            decision = self._decide(inputs, exhausted, customer_spent)
            spent, spent_by_customer = await self._reserve(
                inputs.ruleset, customer_id, decision, inputs.now, held
            )
            denied = spent | spent_by_customer
            if not denied:
                break
            # Another replica (or a call for the same customer) took the last of a budget
            # since we read it: decide again.
            exhausted |= spent
            customer_spent |= spent_by_customer
        else:
            # Out of attempts: never overshoot a budget, drop those offers instead.
            kept = tuple(o for o in decision.offers if o.offer_id not in denied)
            decision = decision.replace(offers=kept)
        unused = held - {o.offer_id for o in decision.offers}
        if unused:
            # Reserved in an earlier attempt, then ranked out: give the budget back.
            release_caps(
                self._store.connection, customer_id, sorted(unused), day=cap_day(inputs.now)
            )
        return decision

    async def _reserve(
        self,
        ruleset: CompiledRuleset,
        customer_id: str,
        decision: Decision,
        now: float,
        held: set[str],
    ) -> tuple[frozenset[str], frozenset[str]]:
        """Take today's budget of the capped offers chosen (once per request, however
        often it decides); returns the ones denied, to decide again without them: the
        day's budget spent, and this customer's share of it spent."""
        caps = [
            (o.offer_id, ruleset.daily_caps[o.offer_id])
            for o in decision.offers
            if o.offer_id in ruleset.daily_caps and o.offer_id not in held
        ]
        if not caps:
            return frozenset(), frozenset()
        try:
            reserved = await reserve_caps(
                self._store.connection,
                customer_id,
                caps,
                day=cap_day(now),
                split=self._store.cluster,
            )
        except StoreUnavailableError:
            # No budget can be taken: as if it were spent.
            everything = frozenset(offer_id for offer_id, _ in caps)
            reserved = Reservation(frozenset(), everything, frozenset())
        held |= reserved.granted
        for offer_id in reserved.spent:
            metrics.CAP_EXHAUSTED.labels(offer_id).inc()
            if self._store.cluster:
                self._spent[offer_id] = (cap_day(now), now + _SPENT_RECHECK_S)
        return reserved.spent, reserved.customer_spent

    def _known_spent(self, now: float) -> frozenset[str]:
        if not self._spent:
            return frozenset()
        day = cap_day(now)
        return frozenset(o for o, (d, until) in self._spent.items() if d == day and now < until)

    async def _load(
        self,
        customer_id: str,
        interaction: Contact | None,
        now: float,
        caps: dict[str, DailyCap],
        remaining: float | None,
    ) -> tuple[Loaded, bool]:
        """What the store has for this decision, or (nothing, degraded) when it is down.

        Degraded, no budget can be taken, so every capped offer counts as spent.
        """
        budget = self._store_timeout_s
        if remaining is not None:
            budget = min(budget, max(remaining * _DEADLINE_SHARE_FOR_STORE, 0.0005))
        # Past the budget, a read Redis has answered (or that we have not even sent) is
        # our own delay, not Redis's: it may finish, up to twice the budget and well
        # inside the caller's deadline, rather than answer without the profile.
        grace = 2 * budget
        if remaining is not None:
            grace = max(budget, min(grace, remaining * _DEADLINE_SHARE_FOR_LATE_READ))
        connection = self._store.connection
        watch = ReadWatch(connection, connection.mark(), budget=budget, grace=grace)
        try:
            async with asyncio.timeout(None) as timer:
                watch.start(timer)
                try:
                    loaded = await self._store.load_for_decision(
                        customer_id, interaction=interaction, now=now, caps=caps
                    )
                finally:
                    watch.stop()
        except TimeoutError:
            self._timed_out(budget, watch)
            return Loaded(_NOTHING, exhausted=frozenset(caps)), True
        except StoreUnavailableError as exc:
            metrics.REDIS_ERRORS.labels("error").inc()
            self._outages.failed(str(exc))
            return Loaded(_NOTHING, exhausted=frozenset(caps)), True
        self._outages.recovered()
        self._overloads.recovered()
        return loaded, False

    def _timed_out(self, budget: float, watch: ReadWatch) -> None:
        """Count and log a profile read that ran out of time, as Redis's or our doing
        (CPU starvation: the read was sent late, or its reply was not read in time)."""
        if watch.ours:
            metrics.REDIS_ERRORS.labels("overloaded").inc()
            self._overloads.failed(
                f"profile read {watch.fate.value} after {budget * 1e3:.1f} ms and its grace; "
                f"this worker's event loop was {watch.late * 1e3:.1f} ms behind"
            )
        else:
            metrics.REDIS_ERRORS.labels("timeout").inc()
            self._outages.failed(f"no answer within {budget * 1e3:.1f} ms")


def exploration_seed(exploration: float, customer_id: str, interaction_id: str) -> int | None:
    """Whether a decision explores, and the seed it samples with (None: it does not).

    Drawn from the interaction when it has an id, so that the same interaction asked
    again (a client's retry, on any replica) gets the same answer; at random otherwise.
    """
    if not interaction_id:
        return random.getrandbits(64) if random.random() < exploration else None
    digest = hashlib.blake2b(f"{customer_id}\0{interaction_id}".encode(), digest_size=16).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    return int.from_bytes(digest[8:], "big") if draw < exploration else None
