"""Small deterministic moment detectors for the tests, in place of the moment engine.

`serve --moment-detector tests.server.detectors:KeywordDetector` uses one in a real
serve process; the in-process tests hand the class to MomentLoop as its factory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from decision_engine.moments.model import Detection, InteractionEvent
from decision_engine.ruleset.compiled import CompiledRuleset


class KeywordDetector:
    """Per interaction, from its `started` event on:

    - a customer utterance with "cancel": `retention` (an offer, re-decided with intent
      cancel, superseding `heard`); with the profile's first name when there is one;
    - any other utterance: `heard`, its text, titled with the ruleset version;
    - `hold_started` not followed by `hold_ended` within HOLD_LIMIT_S: `long-hold`;
    - `ended`: `survey`, routed to the survey IVR.

    Guidance ids come from the event seqs and ids: the same on every replay.
    """

    HOLD_LIMIT_S = 0.5

    def __init__(self, ruleset: CompiledRuleset) -> None:
        self.version = ruleset.version
        self._profiles: dict[str, Mapping[str, Any] | None] = {}
        self._holds: dict[str, tuple[float, str]] = {}
        self.closed = False

    def feed(
        self, event: InteractionEvent, profile: Mapping[str, Any] | None = None
    ) -> list[Detection]:
        iid = event.interaction_id
        if event.kind == "started":
            self._profiles[iid] = profile
            return []
        if iid not in self._profiles:
            return []
        data = event.data
        if event.kind == "utterance":
            text = str(data["text"])
            if data["speaker"] == "customer" and "cancel" in text.lower():
                profile = self._profiles[iid] or {}
                name = profile.get("first_name")
                return [
                    self._detection(
                        event, f"retention:{event.seq}", "retention", "offer",
                        "Customer wants to cancel", f"{name}: {text}" if name else text,
                        "warning", decide=True, context={"intent": "cancel"},
                        supersedes=("heard",),
                    )
                ]  # fmt: skip
            return [
                self._detection(
                    event, f"heard:{event.seq}", "heard", "coaching", f"heard on {self.version}",
                    text, "info",
                )
            ]  # fmt: skip
        if event.kind == "hold_started":
            self._holds[iid] = (event.occurred_at + self.HOLD_LIMIT_S, event.event_id)
        elif event.kind == "hold_ended":
            self._holds.pop(iid, None)
        elif event.kind == "ended":
            return [
                self._detection(
                    event, "survey", "survey", "survey", "Offer the survey", "Ask for 2 minutes",
                    "info", route_queue="survey_ivr", route_priority=5,
                )
            ]  # fmt: skip
        return []

    def _detection(
        self, event: InteractionEvent, occurrence: str, moment: str, kind: str, title: str,
        text: str, severity: str, **more: Any,
    ) -> Detection:  # fmt: skip
        return Detection(
            guidance_id=f"{event.interaction_id}:{occurrence}",
            moment_id=moment,
            interaction_id=event.interaction_id,
            at=event.occurred_at,
            event_ids=(event.event_id,),
            kind=kind,
            title=title,
            text=text,
            severity=severity,
            **more,
        )

    def advance(self, now: float) -> list[Detection]:
        due = [(iid, hold) for iid, hold in self._holds.items() if hold[0] <= now]
        out = []
        for iid, (at, event_id) in sorted(due, key=lambda item: item[1][0]):
            del self._holds[iid]
            out.append(
                Detection(
                    guidance_id=f"{iid}:long-hold:{event_id}",
                    moment_id="long-hold",
                    interaction_id=iid,
                    at=at,
                    event_ids=(event_id,),
                    kind="coaching",
                    title="Long hold",
                    text="Go back to the customer",
                    severity="critical",
                )
            )
        return out

    def next_deadline(self) -> float | None:
        return min((at for at, _ in self._holds.values()), default=None)

    def end(self, interaction_id: str) -> None:
        self._profiles.pop(interaction_id, None)
        self._holds.pop(interaction_id, None)

    @property
    def live(self) -> int:
        return len(self._profiles)

    def close(self) -> None:
        self.closed = True
        self._profiles.clear()
        self._holds.clear()
