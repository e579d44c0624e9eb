"""The DecisionService servicer: validate, read the store once, decide, answer."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import time
from dataclasses import dataclass

import grpc
from prometheus_client import Counter

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.decide.engine import decide
from decision_engine.decide.experiment import CHALLENGER, CHAMPION, CONTROL, Experiment
from decision_engine.decide.learning import Learned, learned_from
from decision_engine.decide.model import Contact, Context, CustomerState, Decision
from decision_engine.errors import (
    DecisionEngineError,
    InvalidRequestError,
    OutcomeLogUnavailableError,
    StoreError,
    StoreUnavailableError,
)
from decision_engine.ruleset.compiled import CompiledRuleset, DailyCap
from decision_engine.server import metrics
from decision_engine.server.convert import (
    OutcomeRequest,
    check_against_decision,
    decision_response,
    outcome_request,
    request_context,
)
from decision_engine.server.decision_ids import DecisionIds
from decision_engine.server.status import status_for
from decision_engine.server.throttle import Outage
from decision_engine.store.connection import Fate, Mark, PipelinedConnection, ReplyError
from decision_engine.store.outcomes import (
    DEFAULT_OUTCOMES_TIMEOUT_S,
    DecisionRecord,
    Recorded,
    Reservation,
    apply_outcome,
    load_learning,
    log_outcome,
    logged_outcome,
    release_caps,
    reserve_caps,
)
from decision_engine.store.profiles import Loaded, ProfileStore, cap_day

log = logging.getLogger(__name__)

# Leave this share of the caller's deadline for deciding and answering.
_DEADLINE_SHARE_FOR_STORE = 0.5
# RecordOutcome answers UNAVAILABLE a little before the caller gives up, so the caller
# learns that it should retry instead of seeing DEADLINE_EXCEEDED.
_DEADLINE_SHARE_FOR_OUTCOME = 0.9
# A read delayed by this worker, not by Redis, may take up to this share of it.
_DEADLINE_SHARE_FOR_LATE_READ = 0.75
# Event-loop turns a read whose reply has arrived gets to read it, past its grace.
_TURNS_FOR_A_REPLY = 3
# A capped offer lost to another replica is replaced by deciding again, at most this often.
_CAP_ATTEMPTS = 3
# Degraded: the store said nothing (the decision gets no state at all).
_NOTHING = CustomerState(profile=None)


class ActiveRuleset:
    """The ruleset being served; a request pins `current` once, so a swap never splits it."""

    def __init__(self, ruleset: CompiledRuleset, *, loaded_at: float, arm: str = CHAMPION) -> None:
        self.current = ruleset
        self.loaded_at = loaded_at
        self.arm = arm
        self._publish()

    def swap(self, ruleset: CompiledRuleset, *, loaded_at: float) -> None:
        old = self.current
        self.current, self.loaded_at = ruleset, loaded_at
        metrics.RULESET_INFO.labels(old.version, old.source.label).set(0)
        self._publish()

    def _publish(self) -> None:
        rs = self.current
        metrics.RULESET_INFO.labels(rs.version, rs.source.label).set(1)
        metrics.RULES_LOADED.labels(self.arm, "offer").set(len(rs.offers))
        metrics.RULES_LOADED.labels(self.arm, "routing").set(len(rs.routes))
        metrics.RULES_LOADED.labels(self.arm, "policy").set(len(rs.policies))


class LearnedState:
    """The posteriors of the active ruleset, refreshed from Redis every second.

    Reading them per request would put every offer's counts on the request path;
    they change only with outcomes, so a worker keeps a copy a second old at most.
    While Redis cannot answer, the last posteriors stay in use.
    """

    def __init__(
        self,
        rules: ActiveRuleset,
        store: ProfileStore,
        *,
        every_s: float = 1.0,
        timeout_s: float = 1.0,
    ) -> None:
        self._rules = rules
        self._store = store
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.learned: Learned | None = None
        self.version = ""
        self._outage = Outage(
            log,
            failing="learned acceptance rates not refreshed (%s), %d attempt(s) so far; "
            "serving the last ones",
            back="learned acceptance rates refreshed again after %d failed attempt(s)",
        )

    def for_ruleset(self, ruleset: CompiledRuleset) -> Learned | None:
        """Posteriors, if they were computed for this ruleset (not a previous one)."""
        return self.learned if self.version == ruleset.version else None

    async def refresh(self) -> None:
        ruleset = self._rules.current
        if not ruleset.source.learning.enabled:
            self.learned, self.version = None, ruleset.version
            return
        async with asyncio.timeout(self.timeout_s):
            stored = await load_learning(self._store.connection)
        learned = learned_from(stored, ruleset, now=time.time())
        self.learned, self.version = learned, ruleset.version
        for offer_id, posterior in learned.overall.items():
            metrics.OFFER_PROPENSITY.labels(offer_id).set(posterior.mean)

    async def run(self) -> None:
        """Refresh until cancelled; no Redis failure (loading, reset, slow, an error
        reply) ends the loop."""
        while True:
            try:
                await self.refresh()
            except (StoreError, ReplyError, OSError, TimeoutError) as exc:
                self._outage.failed(str(exc) or type(exc).__name__)
            else:
                self._outage.recovered()
            await asyncio.sleep(self.every_s)


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


class ReadWatch:
    """Ends a profile read that runs out of time, unless the time went to this worker.

    At `budget` it asks the connection where the read is. Written to Redis at least
    half the budget ago and not answered: Redis is slow or gone, the read ends (the
    `asyncio.timeout` given to `start` raises TimeoutError). Answered, not yet
    written, or written late: the delay is this worker's own (CPU starvation), and the
    read may go on until `grace` before it is ended all the same, unless its reply
    has arrived by then.
    """

    def __init__(
        self, connection: PipelinedConnection, mark: Mark | None, *, budget: float, grace: float
    ) -> None:
        self._connection = connection
        self._mark = mark
        self._budget = budget
        self._grace = grace
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()
        self._due = self._started + budget
        self._timer: asyncio.Timeout | None = None
        self._handle: asyncio.Handle | None = None
        self._turns = 0
        self.ours = False
        """At the last look, the read was late because of this worker, not Redis."""
        self.fate = Fate.WAITING
        """Where the read was when it was last looked at."""
        self.late = 0.0
        """How long after it was due the look that ended the read came."""

    def start(self, timer: asyncio.Timeout) -> None:
        self._timer = timer
        self._handle = self._loop.call_at(self._due, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _check(self) -> None:
        now = self._loop.time()
        self.fate, held = self._connection.fate(self._mark)
        self.ours = self.fate is not Fate.WAITING or held < self._budget / 2
        end = self._started + self._grace
        if self.fate is Fate.ANSWERED and now >= end and self._turns < _TURNS_FOR_A_REPLY:
            # The reply is here: reading it takes the event loop a turn or two.
            self._turns += 1
            self._handle = self._loop.call_soon(self._check)
        elif not self.ours or now >= end:
            self.late = now - self._due
            assert self._timer is not None
            self._timer.reschedule(now)  # ends the read: TimeoutError
        else:
            self._due = end
            self._handle = self._loop.call_at(end, self._check)


@dataclass(frozen=True, slots=True)
class _Inputs:
    """What one Decide call decides from, however often it decides (caps)."""

    ruleset: CompiledRuleset
    state: CustomerState | None
    context: Context
    now: float
    request: pb.DecideRequest
    exhausted: frozenset[str]
    customer_spent: frozenset[str]
    degraded: bool
    learned: Learned | None
    sample_seed: int | None
    """Set when this decision explores (Thompson sampling); the same over cap retries."""


class DecisionService(pb_grpc.DecisionServiceServicer):
    """Answers Decide from the active ruleset and one profile-store round trip."""

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
        outcomes: PipelinedConnection | None = None,
        outcomes_timeout_s: float = DEFAULT_OUTCOMES_TIMEOUT_S,
    ) -> None:
        self._rules = rules
        self._store = store
        self._learned = learned
        self._challenger = challenger
        self._experiment = experiment or Experiment()
        self._outcomes = outcomes or store.connection
        """The outcome log's Redis (the profile store's unless configured apart)."""
        self._outcomes_timeout_s = outcomes_timeout_s
        self._store_timeout_s = store_timeout_s
        self._ids = ids
        self._outages = outage_log()
        self._skips = SkipLog()
        self._overloads = outage_log(
            "server overloaded, not the profile store", "server keeps up again"
        )
        self._decisions: dict[tuple[str, bool], Counter] = {}
        self._offers: dict[str, Counter] = {}

    async def Decide(
        self, request: pb.DecideRequest, context: grpc.aio.ServicerContext
    ) -> pb.DecideResponse:
        started = time.perf_counter()
        try:
            ctx = request_context(request)
        except InvalidRequestError as exc:
            metrics.INVALID_REQUESTS.labels(exc.field.split("[")[0]).inc()
            code, message = status_for(exc)
            await context.abort(code, message)
        arm = self._experiment.arm_of(request.customer_id)
        ruleset = self._ruleset_for(arm)
        now = time.time()
        interaction = (
            Contact(request.interaction_id, ctx.channel, ctx.intent, now)
            if request.interaction_id
            else None
        )
        loaded, degraded = await self._load(
            request.customer_id, interaction, now, ruleset.daily_caps, context
        )
        learned = self._learned.for_ruleset(ruleset) if self._learned is not None else None
        sample_seed = None
        if learned is not None and random.random() < ruleset.source.learning.exploration:
            sample_seed = random.getrandbits(64)
        inputs = _Inputs(
            ruleset,
            None if degraded else loaded.state,
            ctx,
            now,
            request,
            loaded.exhausted,
            loaded.customer_spent,
            degraded,
            learned,
            sample_seed,
        )
        if arm == CONTROL:
            # The holdout is routed like everyone else but hears no offer.
            decision = dataclasses.replace(
                self._decide(inputs, inputs.exhausted, inputs.customer_spent), offers=()
            )
        else:
            decision = await self._decide_within_caps(inputs)
        record = DecisionRecord(
            decision_id="",
            customer_id=request.customer_id,
            offer_ids=tuple(o.offer_id for o in decision.offers),
            interaction_id=request.interaction_id,
            channel=ctx.channel,
            ruleset_version=decision.ruleset_version,
            arm=arm,
            at=now,
        )
        decision = dataclasses.replace(decision, arm=arm, decision_id=self._ids.issue(record))
        response = decision_response(decision)
        self._count(decision.routing.queue, degraded, [o.offer_id for o in decision.offers])
        metrics.DECISIONS_BY_ARM.labels(arm).inc()
        for policy_id in decision.suppressed_by:
            metrics.SUPPRESSIONS.labels(policy_id).inc()
        if not decision.profile_found and not degraded:
            metrics.PROFILE_MISSES.inc()
        for kind, count in loaded.skipped.items():
            self._skips.skipped(kind, count, request.customer_id)
        if decision.unparsed_fields:
            self._skips.skipped("profile_field", len(decision.unparsed_fields), request.customer_id)
        if loaded.contact_refused:
            metrics.CONTACTS_NOT_RECORDED.inc()
        metrics.DECISION_LATENCY.observe(time.perf_counter() - started)
        return response

    def _ruleset_for(self, arm: str) -> CompiledRuleset:
        if arm == CHALLENGER and self._challenger is not None:
            return self._challenger.current
        return self._rules.current

    def _decide(
        self, inputs: _Inputs, exhausted: frozenset[str], customer_spent: frozenset[str]
    ) -> Decision:
        request = inputs.request
        return decide(
            inputs.ruleset,
            state=inputs.state,
            context=inputs.context,
            now=inputs.now,
            decision_id="",  # the signed id is made once the decision is final
            interaction_id=request.interaction_id,
            max_offers=request.max_offers,
            explain=request.explain,
            degraded=inputs.degraded,
            exhausted=exhausted,
            customer_spent=customer_spent,
            learned=inputs.learned,
            sample_seed=inputs.sample_seed,
        )

    async def _decide_within_caps(self, inputs: _Inputs) -> Decision:
        """Decide, holding one unit of today's budget for every capped offer returned."""
        exhausted, customer_spent = inputs.exhausted, inputs.customer_spent
        held: set[str] = set()  # capped offers whose budget this request holds
        customer_id = inputs.request.customer_id
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
            decision = dataclasses.replace(decision, offers=kept)
        unused = held - {o.offer_id for o in decision.offers}
        if unused:
            # Reserved in an earlier attempt, then ranked out: give the budget back.
            release_caps(
                self._store.connection, customer_id, sorted(unused), day=cap_day(inputs.now)
            )
        return decision

    def _count(self, queue: str, degraded: bool, offer_ids: list[str]) -> None:
        # Label lookups cost more than the increments; the children are few (bounded
        # by the ruleset's queues and offers), so keep them.
        key = (queue, degraded)
        counter = self._decisions.get(key)
        if counter is None:
            counter = self._decisions[key] = metrics.DECISIONS.labels(
                queue, "true" if degraded else "false"
            )
        counter.inc()
        for offer_id in offer_ids:
            offers = self._offers.get(offer_id)
            if offers is None:
                offers = self._offers[offer_id] = metrics.OFFERS_RETURNED.labels(offer_id)
            offers.inc()

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
                self._store.connection, customer_id, caps, day=cap_day(now)
            )
        except StoreUnavailableError:
            # No budget can be taken: as if it were spent.
            everything = frozenset(offer_id for offer_id, _ in caps)
            reserved = Reservation(frozenset(), everything, frozenset())
        held |= reserved.granted
        for offer_id in reserved.spent:
            metrics.CAP_EXHAUSTED.labels(offer_id).inc()
        return reserved.spent, reserved.customer_spent

    async def _load(
        self,
        customer_id: str,
        interaction: Contact | None,
        now: float,
        caps: dict[str, DailyCap],
        context: grpc.aio.ServicerContext,
    ) -> tuple[Loaded, bool]:
        """What the store has for this decision, or (nothing, degraded) when it is down.

        Degraded, no budget can be taken, so every capped offer counts as spent.
        """
        budget = self._store_timeout_s
        remaining = context.time_remaining()
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

    async def RecordOutcome(
        self, request: pb.RecordOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordOutcomeResponse:
        try:
            outcome = outcome_request(request, now=time.time())
            remaining = context.time_remaining()
            caller_deadline = (
                None
                if remaining is None
                else asyncio.get_running_loop().time() + remaining * _DEADLINE_SHARE_FOR_OUTCOME
            )
            recorded, arm = await self._record(outcome, caller_deadline=caller_deadline)
        except DecisionEngineError as exc:
            if isinstance(exc, InvalidRequestError):
                metrics.INVALID_REQUESTS.labels(exc.field).inc()
            code, message = status_for(exc)
            await context.abort(code, message)
        if recorded.status != "duplicate":
            metrics.OUTCOMES.labels(outcome.offer_id or "-", outcome.outcome).inc()
            metrics.OUTCOMES_BY_ARM.labels(arm, outcome.outcome).inc()
        return pb.RecordOutcomeResponse(
            duplicate=recorded.status == "duplicate", outcome_id=recorded.outcome_id
        )

    async def _record(
        self, outcome: OutcomeRequest, *, caller_deadline: float | None
    ) -> tuple[Recorded, str]:
        """Log the outcome, then apply it; (what the log said, the decision's arm).

        Each step has the outcome timeout (within the caller's deadline), so a failure
        names the Redis that did not answer. An outcome logged but not applied is
        applied later by the reconciler.
        """
        decision = self._ids.verify(outcome.decision_id, now=time.time())
        check_against_decision(outcome, decision)
        budget = self._outcome_budget(caller_deadline)
        try:
            async with asyncio.timeout(budget):
                recorded = await log_outcome(
                    self._outcomes,
                    decision=decision,
                    offer_id=outcome.offer_id,
                    outcome=outcome.outcome,
                    channel=outcome.channel,
                    reason=outcome.reason,
                    at=outcome.at,
                    decision_ttl_s=self._ids.ttl_s,
                )
        except TimeoutError:
            raise OutcomeLogUnavailableError(f"no answer within {budget * 1e3:.0f} ms") from None
        except StoreUnavailableError as exc:
            raise OutcomeLogUnavailableError(str(exc)) from exc
        # Also for a duplicate: if an earlier attempt was logged but not applied, this applies it.
        entry = logged_outcome(
            decision, offer_id=outcome.offer_id, outcome=outcome.outcome, at=outcome.at
        )
        learning = self._rules.current.source.learning
        budget = self._outcome_budget(caller_deadline)
        later = "the outcome is logged and will be applied by the reconciler"
        try:
            async with asyncio.timeout(budget):
                await apply_outcome(
                    self._store.connection, entry, decision_ttl_s=self._ids.ttl_s, learning=learning
                )
        except TimeoutError:
            raise StoreUnavailableError(
                f"no answer within {budget * 1e3:.0f} ms; {later}"
            ) from None
        except StoreUnavailableError as exc:
            raise StoreUnavailableError(f"{exc}; {later}") from exc
        return recorded, decision.arm

    def _outcome_budget(self, caller_deadline: float | None) -> float:
        if caller_deadline is None:
            return self._outcomes_timeout_s
        left = caller_deadline - asyncio.get_running_loop().time()
        return min(self._outcomes_timeout_s, max(left, 0.001))

    async def Ping(
        self, request: pb.PingRequest, context: grpc.aio.ServicerContext
    ) -> pb.PingResponse:
        return pb.PingResponse()


class AdminService(pb_grpc.AdminServiceServicer):
    """What this worker serves, for operators."""

    def __init__(self, rules: ActiveRuleset, *, rules_dir: str) -> None:
        self._rules = rules
        self._rules_dir = rules_dir

    async def GetRuleset(
        self, request: pb.GetRulesetRequest, context: grpc.aio.ServicerContext
    ) -> pb.RulesetStatus:
        rs = self._rules.current
        status = pb.RulesetStatus(
            version=rs.version,
            label=rs.source.label,
            offers=len(rs.offers),
            routing_rules=len(rs.routes),
            policies=len(rs.policies),
            rules_dir=self._rules_dir,
            worker_pid=os.getpid(),
        )
        status.loaded_at.FromNanoseconds(int(self._rules.loaded_at * 1e9))
        return status
