"""From the matches durable_rules reported to the guidance the agent sees.

durable_rules only says which facts completed which pattern; everything a moment decides
beyond the pattern happens here, in plain Python, after its call has returned:

1. one match per moment and trigger (an `or` in a step, or several earlier events that
   fit a sequence, can complete it more than once): the one with the latest events;
2. a moment already superseded, detected once (`once`), or within its cooldown is left
   out, and so is one whose `when` is not true (unknown counts as not true);
3. of the moments one trigger completes, one that another of them supersedes is left out;
4. the rest, in file order, become Detections: texts rendered, the guidance id derived
   from (interaction, moment, occurrence), so a replay yields the same ids.

Then their `set:` updates the interaction's context, for the moments that follow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from decision_engine.moments.interaction import Interaction
from decision_engine.moments.model import Detection, InteractionEvent
from decision_engine.ruleset.closures import compile_all
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.ruleset.runtime import Fn
from decision_engine.ruleset.spec import MomentSpec


@dataclass(frozen=True, slots=True)
class Candidate:
    """A moment's pattern completed by durable_rules."""

    moment: int
    events: tuple[InteractionEvent, ...]
    """The matched events, in the pattern's order."""
    seqs: tuple[int, ...]
    trigger: InteractionEvent
    """The event the guidance is about (the last one matched, or an absence's anchor)."""
    at: float
    """Event time of the detection (the trigger's, or an absence's deadline)."""


def guidance_id(interaction_id: str, moment_id: str, occurrence: int) -> str:
    """Deterministic: the same interaction, moment and occurrence give the same id."""
    key = f"{interaction_id}\x1f{moment_id}\x1f{occurrence}".encode()
    return hashlib.sha256(key).hexdigest()[:24]


class Detector:
    """The moments' `when`, texts and bookkeeping, compiled once per ruleset."""

    def __init__(self, ruleset: CompiledRuleset) -> None:
        self.moments: tuple[MomentSpec, ...] = ruleset.source.moments
        self._when: tuple[Fn | None, ...] = tuple(
            compile_all([c.node for c in m.when]) for m in self.moments
        )
        self._index = {m.id: i for i, m in enumerate(self.moments)}
        self._supersedes = tuple(
            frozenset(self._index[s] for s in m.supersedes) for m in self.moments
        )
        # Titles and texts compiled once, as the offers' scripts are.
        self._texts = tuple(
            (ruleset.texts.compile(m.guidance.title), ruleset.texts.compile(m.guidance.text))
            for m in self.moments
        )
        self._parsers = ruleset.attribute_parsers

    def detect(self, interaction: Interaction, candidates: Sequence[Candidate]) -> list[Detection]:
        """The Detections of one trigger (an event or a deadline), in file order."""
        best: dict[int, Candidate] = {}
        for candidate in candidates:
            known = best.get(candidate.moment)
            if known is None or candidate.seqs[::-1] > known.seqs[::-1]:
                best[candidate.moment] = candidate
        chosen = [c for _, c in sorted(best.items()) if self._may_fire(interaction, c)]
        beaten = set().union(*(self._supersedes[c.moment] for c in chosen))
        fired = [c for c in chosen if c.moment not in beaten]
        # Every text is rendered from the state before this trigger's own `set:` updates.
        out = [self._detection(interaction, c) for c in fired]
        for candidate in fired:
            self._after(interaction, candidate)
        return out

    def _may_fire(self, interaction: Interaction, candidate: Candidate) -> bool:
        index = candidate.moment
        spec = self.moments[index]
        if index in interaction.silenced:
            return False
        if spec.once and index in interaction.occurrences:
            return False
        last = interaction.last_at.get(index)
        if last is not None and candidate.at < last + spec.cooldown:
            return False
        when = self._when[index]
        return when is None or when(interaction.facts) is True

    def _detection(self, interaction: Interaction, candidate: Candidate) -> Detection:
        spec = self.moments[candidate.moment]
        occurrence = interaction.occurrences.get(candidate.moment, 0) + 1
        guidance = spec.guidance
        return Detection(
            guidance_id=guidance_id(interaction.interaction_id, spec.id, occurrence),
            moment_id=spec.id,
            interaction_id=interaction.interaction_id,
            at=candidate.at,
            event_ids=tuple(e.event_id for e in candidate.events),
            kind=guidance.kind,
            # The trigger event's own fields ({text}, {duration_s}) first, then the state.
            title=self._texts[candidate.moment][0](interaction.facts, candidate.trigger.data),
            text=self._texts[candidate.moment][1](interaction.facts, candidate.trigger.data),
            severity=guidance.severity,
            decide=spec.decide,
            route_queue=spec.transfer.queue if spec.transfer is not None else "",
            route_priority=spec.transfer.priority if spec.transfer is not None else 0,
            context=dict(spec.context),
            supersedes=spec.supersedes,
        )

    def _after(self, interaction: Interaction, candidate: Candidate) -> None:
        index = candidate.moment
        interaction.occurrences[index] = interaction.occurrences.get(index, 0) + 1
        interaction.last_at[index] = candidate.at
        interaction.silenced |= self._supersedes[index]
        for name, text in self.moments[index].context:
            interaction.facts[name] = self._typed(name, text)

    def _typed(self, name: str, text: str) -> Any:
        parser = self._parsers.get(name)
        return parser(text) if parser is not None else text
