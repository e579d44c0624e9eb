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


REBUILD_UNCHANGED_S = 60.0
"""Posteriors are made again this often when the counters have not changed (decay)."""


class LearnedState:
    """The posteriors of the active ruleset, refreshed from Redis every second.

    Reading them per request would put every offer's counts on the request path;
    they change only with outcomes, so a worker keeps a copy a second old at most.
    While Redis cannot answer, the last posteriors stay in use.

    The counts in Redis are per offer (and segment), not per arm: every arm's outcomes
    add to the same counters, so the posteriors are shared by offer id. Each arm turns
    them into posteriors with its own ruleset (its priors, prior strength, half-life,
    `by`), in its own LearnedState: `alongside` makes one for another arm's ruleset,
    refreshed by this one's loop from the same single read.
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
        self._alongside: list[LearnedState] = []
        self._stored: dict[str, str] | None = None
        """The counters the posteriors were made from, and when."""
        self._built_at = 0.0
        self._outage = Outage(
            log,
            failing="learned acceptance rates not refreshed (%s), %d attempt(s) so far; "
            "serving the last ones",
            back="learned acceptance rates refreshed again after %d failed attempt(s)",
        )

    def for_ruleset(self, ruleset: CompiledRuleset) -> Learned | None:
        """Posteriors, if they were computed for this ruleset (not a previous one)."""
        return self.learned if self.version == ruleset.version else None

    def alongside(self, rules: ActiveRuleset) -> LearnedState:
        """The posteriors of another arm's ruleset (the challenger's), refreshed with these."""
        other = LearnedState(rules, self._store, every_s=self.every_s, timeout_s=self.timeout_s)
        self._alongside.append(other)
        return other

    async def refresh(self) -> None:
        """One read of the counters, turned into posteriors for each ruleset that learns."""
        stored: dict[str, str] | None = None
        for state in (self, *self._alongside):
            ruleset = state._rules.current
            if not ruleset.source.learning.enabled:
                state.learned, state.version = None, ruleset.version
                continue
            if stored is None:
                async with asyncio.timeout(self.timeout_s):
                    stored = await load_learning(self._store.connection)
            now = time.time()
            learned, before = state.learned, state._stored
            if (
                learned is not None
                and before is not None
                and state.version == ruleset.version
                and now - state._built_at < REBUILD_UNCHANGED_S
            ):
                if stored == before:
                    # Nothing was learned since: the same posteriors (decay over a minute
                    # is a millionth of a half-life), and the rankings' plans made from
                    # them are kept. Rebuilding them every second was ~10 % of a worker.
                    continue
                # A second's outcomes touch a few of thousands of keys: only theirs are
                # read again. Rebuilding all on the event loop stalled every call in
                # flight (10,000 offers in 5 segments: ~360 ms, and ~17 ms per plan).
                changed = [k for k, v in stored.items() if before.get(k) != v]
                changed += [k for k in before if k not in stored]
                state.learned = learned.updated(stored, changed, ruleset, now=now)
                state._stored = stored
                shown = [k for k in changed if "|" not in k]
            else:
                # Every key, for the decay, once a minute or for a new ruleset: in a
                # thread, so that calls in flight wait for the GIL's turns, not for all.
                plans = learned.plan_keys() if learned is not None else []
                rebuilt = await asyncio.to_thread(_rebuilt, stored, ruleset, now, plans)
                state.learned, state.version = rebuilt, ruleset.version
                state._stored, state._built_at = stored, now
                shown = list(rebuilt.overall)
            if state is self and state.learned is not None:
                # The gauge shows this (the champion's) posteriors, as it always has.
                overall = state.learned.overall
                for offer_id in shown:
                    if offer_id in overall:
                        metrics.OFFER_PROPENSITY.labels(offer_id).set(overall[offer_id].mean)

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


def _rebuilt(
    stored: dict[str, str], ruleset: CompiledRuleset, now: float, plans: list[tuple[object, bool]]
) -> Learned:
    """Posteriors from every key, with the plans the previous ones had made."""
    learned = learned_from(stored, ruleset, now=now)
    for segment, exploring in plans:
        learned.plan(ruleset, segment, exploring=exploring)
    return learned
