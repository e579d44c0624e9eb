"""The moment engine: interaction events in, detected moments (guidance) out.

Pure: no I/O and no wall clock. Event time (`occurred_at`) is the only clock, and the
same events in the same order give the same Detections, guidance ids included, in a
fresh engine (after a crash, replay the interaction's events).

Not thread safe: durable_rules' C core is not, so one thread owns an engine (and the
durable_rules host inside it) for its whole life.

Per interaction, in this order:

- Events before its `started` are held (at most `max_held`), then processed in `seq`
  order right after it. Events after `ended`, or seen before (same event id), are ignored.
- Before an event is processed, the interaction's deadlines due by its `occurred_at`
  fire, earliest first; then its clock moves to the event's time (never back: a late
  event happens now), the state is updated (intent, sentiment, hold time, ...), and the
  event enters durable_rules as a fact, if some step waits for its kind.
- What durable_rules matched becomes guidance in detections.py (once, cooldown,
  supersedes, `when`, texts); an absence moment's anchor sets a deadline instead.
- Facts leave durable_rules once no pattern can reach back to them (the longest span of
  any moment), oldest first, and at most FACT_IDS stay at once per interaction.
- `ended` ends the interaction: its session is deleted and its deadlines dropped.

Sessions: durable_rules takes 1,023 per ruleset, so the engine registers copies of the
ruleset (`moments0`, `moments1`, ...) as needed and gives each new interaction the first
free slot; `max_live` bounds them all (MomentCapacityError beyond).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from decision_engine.errors import MomentCapacityError, RulesetError
from decision_engine.moments.deadlines import Deadline, Deadlines
from decision_engine.moments.definitions import ANCHOR, DEADLINE, compile_moments, detect_rule
from decision_engine.moments.detections import Candidate, Detector
from decision_engine.moments.host import DEADLINE_ID, SLOTS_PER_RULESET, Sessions
from decision_engine.moments.interaction import Interaction, LiveFact
from decision_engine.moments.limits import limit_problems
from decision_engine.moments.model import Detection, EventValue, InteractionEvent
from decision_engine.moments.phrases import matched_tags
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.ruleset.moment_fields import event_fields
from decision_engine.ruleset.spec import ABSENCE

ENDED_REMEMBERED = 4096
"""Ended interactions remembered, so a late event does not start waiting for a `started`."""


class MomentEngine:
    """Detects the moments of a compiled ruleset in live interactions (one thread only)."""

    def __init__(
        self,
        ruleset: CompiledRuleset,
        *,
        max_live: int = 2 * SLOTS_PER_RULESET,
        max_held: int = 256,
        slots_per_ruleset: int = SLOTS_PER_RULESET,
    ) -> None:
        moments = ruleset.source.moments
        self.program = compile_moments(moments)
        problems = limit_problems(self.program)
        if problems:
            raise RulesetError(problems)
        self._detector = Detector(ruleset)
        self._matches: list[tuple[int, dict[str, Any]]] = []
        self._sessions = Sessions(
            lambda: self.program.definition(self._record),
            max_live=max_live,
            slots_per_ruleset=slots_per_ruleset,
        )
        self._max_held = max_held
        self._tags = self.program.phrase_sets
        self._types = {
            kind: {n: spec.kind for n, spec in event_fields(kind, ()).items()}
            for kind in self.program.carried
        }
        self._live: dict[str, Interaction] = {}
        self._held: dict[str, list[InteractionEvent]] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._deadlines = Deadlines()

    # -- the API ----------------------------------------------------------------------

    def feed(
        self, event: InteractionEvent, profile: Mapping[str, Any] | None = None
    ) -> list[Detection]:
        """The moments this event completes (after the interaction's deadlines due by its
        time). `profile`: the customer's typed facts, given with the `started` event."""
        iid = event.interaction_id
        if iid in self._ended:
            return []
        interaction = self._live.get(iid)
        if interaction is not None:
            return [] if event.kind == "started" else self._process(interaction, event)
        if event.kind != "started":
            self._hold(event)
            return []
        interaction = Interaction.begin(event, self._sessions.acquire(), profile)
        self._live[iid] = interaction
        out = self._process(interaction, event)
        for held in sorted(self._held.pop(iid, ()), key=lambda e: e.seq):
            if iid not in self._live:
                break  # a held `ended` ended it
            out += self._process(interaction, held)
        return out

    def advance(self, now: float) -> list[Detection]:
        """The deadlines due by event time `now`, across every live interaction."""
        out: list[Detection] = []
        while (deadline := self._deadlines.pop_any(now)) is not None:
            out += self._fire(self._live[deadline.interaction_id], deadline)
        return out

    def next_deadline(self) -> float | None:
        """Event time of the earliest pending deadline (None when there is none)."""
        return self._deadlines.next_due()

    def end(self, interaction_id: str) -> None:
        """Forget an interaction (also done after its `ended` event)."""
        self._held.pop(interaction_id, None)
        interaction = self._live.pop(interaction_id, None)
        if interaction is None:
            return
        self._deadlines.drop(interaction_id)
        self._sessions.release(interaction.slot)
        self._ended[interaction_id] = None
        if len(self._ended) > ENDED_REMEMBERED:
            self._ended.popitem(last=False)

    @property
    def live(self) -> int:
        """Interactions started and not ended."""
        return len(self._live)

    @property
    def held(self) -> int:
        """Interactions with events waiting for their `started`."""
        return len(self._held)

    def close(self) -> None:
        """Free durable_rules' memory; the engine cannot be used afterwards."""
        self._live.clear()
        self._held.clear()
        self._sessions.close()

    # -- one interaction ----------------------------------------------------------------

    def _hold(self, event: InteractionEvent) -> None:
        held = self._held.get(event.interaction_id)
        if held is None:
            if len(self._held) >= self._sessions.max_live:
                raise MomentCapacityError(
                    f"{len(self._held)} interactions have events waiting for their "
                    "`started`, the most this engine holds"
                )
            held = self._held[event.interaction_id] = []
        if len(held) >= self._max_held:
            raise MomentCapacityError(
                f"interaction {event.interaction_id}: {len(held)} events arrived before its "
                f"`started`, the most held (max_held={self._max_held})"
            )
        held.append(event)

    def _process(self, interaction: Interaction, event: InteractionEvent) -> list[Detection]:
        if event.event_id in interaction.seen:
            return []
        interaction.seen.add(event.event_id)
        out: list[Detection] = []
        iid = interaction.interaction_id
        while (deadline := self._deadlines.pop_for(iid, event.occurred_at)) is not None:
            out += self._fire(interaction, deadline)
        now = interaction.tick(event.occurred_at)
        event = interaction.completed(event)
        interaction.apply(event)
        self._expire(interaction, now)
        candidates = self._assert_event(interaction, event, now)
        out += self._detector.detect(interaction, candidates)
        self._expire(interaction, now)
        if event.kind == "ended":
            self.end(iid)
        return out

    def _assert_event(
        self, interaction: Interaction, event: InteractionEvent, now: float
    ) -> list[Candidate]:
        carried = self.program.carried.get(event.kind)
        if carried is None:
            return []  # no step waits for this kind: durable_rules never sees it
        if not interaction.free_ids:
            self._retract(interaction)  # at most FACT_IDS facts per interaction
        seq = interaction.next_seq()
        fact: dict[str, Any] = {
            "id": interaction.free_ids.pop(),
            "kind": event.kind,
            "seq": seq,
            "t": now,
        }
        types = self._types[event.kind]
        for name in carried:
            value = _plain(event.data.get(name), types[name])
            if value is not None:
                fact[name] = value
        if event.kind == "utterance":
            tags = matched_tags(self._tags, event.data)
            if tags:
                fact["says"] = tags
        if not self._sessions.assert_fact(interaction.slot, fact):
            interaction.free_ids.append(fact["id"])  # no rule took it: nothing stored
            return []
        live = LiveFact(seq, now, fact, event)
        interaction.live.append(live)
        interaction.by_seq[seq] = live
        return self._candidates(interaction, now)

    def _candidates(self, interaction: Interaction, at: float) -> list[Candidate]:
        """Drain the matches the last call reported; anchors set deadlines."""
        matches, self._matches = self._matches, []
        out = []
        for rule_index, matched in matches:
            rule = self.program.rules[rule_index]
            spec = self.program.moments[rule.moment]
            if rule.role == ANCHOR:
                anchor = matched["a"]
                if not (spec.once and rule.moment in interaction.occurrences):
                    due = anchor["t"] + spec.pattern.within
                    iid, target = interaction.interaction_id, detect_rule(rule.moment)
                    self._deadlines.add(due, iid, target, rule.moment, int(anchor["seq"]))
                continue
            seqs = tuple(int(matched[alias]["seq"]) for alias in rule.aliases)
            events = tuple(interaction.by_seq[s].event for s in seqs)
            trigger = events[0] if spec.pattern.shape == ABSENCE else events[-1]
            out.append(Candidate(rule.moment, events, seqs, trigger, at))
        return out

    def _fire(self, interaction: Interaction, deadline: Deadline) -> list[Detection]:
        """An absence deadline: durable_rules decides whether the missing event came."""
        now = interaction.tick(deadline.due)
        fact = {
            "id": DEADLINE_ID,
            "kind": DEADLINE,
            "rule": deadline.rule,
            "anchor": deadline.anchor_seq,
            "t": now,
        }
        self._sessions.assert_fact(interaction.slot, fact)
        # Retracted at once: a deadline left behind could complete its rule later, when
        # the event that blocked it leaves durable_rules.
        self._sessions.retract_fact(interaction.slot, fact)
        out = self._detector.detect(interaction, self._candidates(interaction, now))
        self._expire(interaction, now)
        return out

    def _expire(self, interaction: Interaction, now: float) -> None:
        """Retract the facts no pattern can reach any more, oldest first.

        Oldest first matters: a count's `$not` steps could be completed by retracting a
        fact while an older one it stood between is still there.
        """
        horizon = self.program.horizon
        live = interaction.live
        while live and live[0].t + horizon <= now:
            self._retract(interaction)

    def _retract(self, interaction: Interaction) -> None:
        oldest = interaction.live.popleft()
        self._sessions.retract_fact(interaction.slot, oldest.fact)
        interaction.free_ids.append(oldest.fact["id"])
        del interaction.by_seq[oldest.seq]

    def _record(self, rule_index: int, matched: dict[str, Any]) -> None:
        # The only thing a durable_rules action does (definitions.py says why).
        self._matches.append((rule_index, matched))


def _plain(value: EventValue | None, kind: str) -> str | float | bool | None:
    """A data value as durable_rules compares it (numbers as finite floats), or None, as
    if absent, when it is not of its field's type: durable_rules would compare anything."""
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if kind in ("number", "integer"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok and math.isfinite(value) else None  # type: ignore[arg-type]
    return value if isinstance(value, str) else None
