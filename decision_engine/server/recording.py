"""RecordOutcome's work, free of the transport: log the outcome, then apply it."""

from __future__ import annotations

import asyncio
import time

from decision_engine.server.convert import OutcomeRequest, check_against_decision
from decision_engine.server.decision_ids import DecisionIds
from decision_engine.server.session import DecisionSession
from decision_engine.store.connection import Connection
from decision_engine.store.outcomes import DEFAULT_OUTCOMES_TIMEOUT_S, Recorded, record_outcome
from decision_engine.store.profiles import ProfileStore


class OutcomeRecorder:
    """Writes an outcome to the durable log, then to what decisions read."""

    def __init__(
        self,
        session: DecisionSession,
        store: ProfileStore,
        *,
        ids: DecisionIds,
        outcomes: Connection | None = None,
        timeout_s: float = DEFAULT_OUTCOMES_TIMEOUT_S,
        wait_replicas: int = 0,
    ) -> None:
        self._session = session
        self._store = store
        self._ids = ids
        self._outcomes = outcomes or store.connection
        """The outcome log's Redis (the profile store's unless configured apart)."""
        self._timeout_s = timeout_s
        self._wait_replicas = wait_replicas

    async def record(
        self, outcome: OutcomeRequest, *, caller_deadline: float | None
    ) -> tuple[Recorded, str]:
        """Log the outcome, then apply it; (what the log said, the decision's arm).

        Each step has the outcome timeout (within the caller's deadline), so a failure
        names the Redis that did not answer. An outcome logged but not applied is
        applied later by the reconciler.
        """
        decision = self._ids.verify(outcome.decision_id, now=time.time())
        check_against_decision(outcome, decision)
        recorded = await record_outcome(
            self._outcomes,
            self._store.connection,
            decision=decision,
            offer_id=outcome.offer_id,
            outcome=outcome.outcome,
            channel=outcome.channel,
            reason=outcome.reason,
            at=outcome.at,
            decision_ttl_s=self._ids.ttl_s,
            # Applied as the arm the decision was made in learns (the counters are shared).
            learning=self._session.ruleset_for(decision.arm).source.learning,
            budget=lambda: self._outcome_budget(caller_deadline),
            wait_replicas=self._wait_replicas,
        )
        return recorded, decision.arm

    def _outcome_budget(self, caller_deadline: float | None) -> float:
        if caller_deadline is None:
            return self._timeout_s
        left = caller_deadline - asyncio.get_running_loop().time()
        return min(self._timeout_s, max(left, 0.001))
