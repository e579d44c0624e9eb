"""The learned posteriors each worker keeps, refreshed from Redis in the background."""

from __future__ import annotations

import asyncio
import logging
import time

from decision_engine.decide.learning import Learned, learned_from
from decision_engine.errors import StoreError
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.server import metrics
from decision_engine.server.rulesets import ActiveRuleset
from decision_engine.server.throttle import Outage
from decision_engine.store.connection import ReplyError
from decision_engine.store.outcomes import load_learning
from decision_engine.store.profiles import ProfileStore

# The name log lines have always carried (filters and alerts match it).
log = logging.getLogger("decision_engine.server.service")


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
