"""The DecisionService servicer: convert the request, run the session, count, answer.

The decision itself (arm, store read, learning, caps) is session.py's, recording an
outcome recording.py's; the rulesets being served are rulesets.py's and the learned
posteriors learning.py's.
"""

from __future__ import annotations

import asyncio
import os
import time

import grpc
from prometheus_client import Counter

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.errors import DecisionEngineError, InvalidRequestError
from decision_engine.server import metrics
from decision_engine.server.convert import decision_response, outcome_request, request_context
from decision_engine.server.learning import LearnedState
from decision_engine.server.read_watch import ReadWatch
from decision_engine.server.recording import OutcomeRecorder
from decision_engine.server.rulesets import ActiveRuleset
from decision_engine.server.session import DecisionSession
from decision_engine.server.status import status_for

__all__ = ["ActiveRuleset", "AdminService", "DecisionService", "LearnedState", "ReadWatch"]

# RecordOutcome answers UNAVAILABLE a little before the caller gives up, so the caller
# learns that it should retry instead of seeing DEADLINE_EXCEEDED.
_DEADLINE_SHARE_FOR_OUTCOME = 0.9


class DecisionService(pb_grpc.DecisionServiceServicer):
    """Answers Decide from the active ruleset and one profile-store round trip."""

    def __init__(self, session: DecisionSession, recorder: OutcomeRecorder) -> None:
        self._session = session
        self._recorder = recorder
        self._decisions: dict[tuple[str, bool], Counter] = {}
        self._offers: dict[str, Counter] = {}

    async def Decide(
        self, request: pb.DecideRequest, context: grpc.aio.ServicerContext
    ) -> pb.DecideResponse:
        started = time.perf_counter()
        try:
            # The request alone, then (in the session) its context against the schema.
            decision = await self._session.decide(
                customer_id=request.customer_id,
                interaction_id=request.interaction_id,
                context=request_context(request),
                max_offers=request.max_offers,
                explain=request.explain,
                time_remaining=context.time_remaining(),
                check=True,
            )
        except InvalidRequestError as exc:
            metrics.INVALID_REQUESTS.labels(exc.field.split("[")[0]).inc()
            code, message = status_for(exc)
            await context.abort(code, message)
        response = decision_response(decision)
        degraded = decision.degraded
        self._count(decision.routing.queue, degraded, [o.offer_id for o in decision.offers])
        metrics.DECISIONS_BY_ARM.labels(decision.arm).inc()
        for policy_id in decision.suppressed_by:
            metrics.SUPPRESSIONS.labels(policy_id).inc()
        if not decision.profile_found and not degraded:
            metrics.PROFILE_MISSES.inc()
        metrics.DECISION_LATENCY.observe(time.perf_counter() - started)
        return response

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
            recorded, arm = await self._recorder.record(outcome, caller_deadline=caller_deadline)
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
