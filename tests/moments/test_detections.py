"""What a completed pattern becomes: once and cooldowns, supersedes, `when` over the
profile and the interaction's state, `set:` updates, the texts and the guidance ids."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from decision_engine.moments.detections import guidance_id
from tests.moments.support import Call, detected, engine


def test_once_per_interaction_by_default_and_a_cooldown_with_repeat(tmp_path: Path) -> None:
    moments = """
    moments:
      - id: once
        pattern: {event: utterance, says: [cancel]}
        guidance: {kind: offer, title: t, text: x}
      - id: often
        pattern: {event: utterance, says: [cancel]}
        repeat: {cooldown: 30s}
        guidance: {kind: offer, title: t, text: x}
    """
    call = Call(engine(tmp_path, moments))
    call.start()
    for at in (10, 20, 39.9, 40, 71):
        call.says(at, "cancel")
    assert detected(call.detections) == [("once", 10), ("often", 10), ("often", 40), ("often", 71)]
    occurrences = [d.guidance_id for d in call.detections if d.moment_id == "often"]
    assert occurrences == [guidance_id("i-1", "often", n) for n in (1, 2, 3)]
    assert len(set(occurrences)) == 3


SUPERSEDE = """
moments:
  - id: specialist
    pattern: {event: utterance, says: [cancel]}
    when: clv >= 10000
    supersedes: [general]
    guidance: {kind: route, title: Specialist, text: x}
    route: {queue: retention_specialists, priority: 1}
  - id: general
    pattern: {event: utterance, says: [cancel, leave]}
    guidance: {kind: offer, title: General, text: x}
"""


def test_a_superseding_moment_wins_on_the_same_event(tmp_path: Path) -> None:
    call = Call(engine(tmp_path, SUPERSEDE))
    call.start({"clv": 20000.0})
    assert call.says(5, "I want to cancel") == ["specialist"]
    detection = call.detections[0]
    assert detection.supersedes == ("general",)
    assert (detection.route_queue, detection.route_priority) == ("retention_specialists", 1)
    # ...and the superseded one is not detected later in the interaction.
    assert call.says(9, "I will leave") == []


def test_a_superseded_moment_detected_first_is_replaced_later(tmp_path: Path) -> None:
    call = Call(engine(tmp_path, SUPERSEDE))
    call.start({"clv": 20000.0})
    assert call.says(5, "I will leave") == ["general"]
    assert call.says(9, "cancel it") == ["specialist"]
    assert call.detections[1].supersedes == ("general",)


def test_when_false_or_unknown_keeps_the_moment_for_later(tmp_path: Path) -> None:
    call = Call(engine(tmp_path, SUPERSEDE))
    call.start(None)  # no profile: clv unknown, so not >= 10000
    assert call.says(5, "cancel") == ["general"]


def test_when_reads_the_interactions_state(tmp_path: Path) -> None:
    moments = """
    moments:
      - id: long-wait-and-angry
        pattern: {event: sentiment, where: value < -0.5}
        when: hold_s_total >= 300 and holds >= 2 and sentiment < -0.5 and intent == "complaint"
        guidance: {kind: coaching, title: t, text: "{holds} holds, {hold_s_total} s"}
    """
    call = Call(engine(tmp_path, moments))
    call.start(intent="billing_dispute")
    call.at(100, "hold_ended", duration_s=200)
    assert call.at(110, "sentiment", value=-0.9, speaker="customer") == []
    call.at(300, "hold_ended", duration_s=150.5)
    assert call.at(310, "sentiment", value=-0.9, speaker="customer") == []  # intent
    call.at(320, "intent_changed", intent="complaint")
    assert call.at(330, "sentiment", value=-0.9, speaker="customer") == ["long-wait-and-angry"]
    assert call.detections[0].text == "2 holds, 350.50 s"


def test_set_updates_the_context_for_the_moments_after_it(tmp_path: Path) -> None:
    moments = """
    moments:
      - id: card-lost
        pattern: {event: utterance, says: [lost my card]}
        guidance: {kind: route, title: Card, text: x}
        set: {intent: lost_card, card_status: lost}
        decide: true
      - id: card-follow-up
        pattern: {event: utterance, says: [replacement]}
        when: intent == "lost_card" and card_status == "lost"
        guidance: {kind: knowledge, title: Replacement, text: Express delivery}
    """
    call = Call(engine(tmp_path, moments))
    call.start()
    assert call.says(5, "when will the replacement come") == []
    assert call.says(10, "I lost my card") == ["card-lost"]
    assert call.detections[0].context == {"intent": "lost_card", "card_status": "lost"}
    assert call.detections[0].decide is True
    assert call.says(15, "when will the replacement come") == ["card-follow-up"]


def test_texts_render_event_fields_profile_values_and_dates(tmp_path: Path) -> None:
    moments = """
    moments:
      - id: renewal
        pattern: {event: utterance, says: [renew]}
        guidance:
          kind: knowledge
          title: "Renewal for {first_name|the customer}"
          text: "Ends {contract_end}; worth EUR {clv}; they said: {text} ({speaker})"
          severity: warning
    """
    call = Call(engine(tmp_path, moments))
    profile = {"first_name": "Alice", "contract_end": date(2025, 9, 19).toordinal(), "clv": 4800.5}
    call.start(profile)
    call.at(3, "utterance", speaker="customer", text="Can I renew?")
    detection = call.detections[0]
    assert detection.title == "Renewal for Alice"
    assert (
        detection.text == "Ends 2025-09-19; worth EUR 4,800.50; they said: Can I renew? (customer)"
    )
    assert (detection.kind, detection.severity) == ("knowledge", "warning")
    other = Call(engine(tmp_path / "again", moments), "i-2")
    other.start(None)
    other.says(3, "renew")
    assert other.detections[0].title == "Renewal for the customer"


def test_guidance_ids_depend_on_interaction_moment_and_occurrence_only() -> None:
    assert guidance_id("i-1", "m", 1) == guidance_id("i-1", "m", 1)
    ids = {guidance_id(*key) for key in (("i-1", "m", 1), ("i-2", "m", 1), ("i-1", "m", 2))}
    assert len(ids | {guidance_id("i-1", "n", 1)}) == 4


def test_texts_take_formats_and_conditional_text(tmp_path: Path) -> None:
    # The demo ruleset sets currency EUR and no locale (en_US).
    moments = """
    moments:
      - id: renewal
        pattern: {event: utterance, says: [renew]}
        guidance:
          kind: knowledge
          title: "{if clv >= 10000}Valuable customer{else}Renewal{end}"
          text: >-
            Ends {contract_end:date long}; worth {clv:money 0}{if holds > 0}
            after {holds} holds{end}; {if speaker == "customer"}they{else}you{end} said it
    """
    call = Call(engine(tmp_path, moments))
    profile = {"contract_end": date(2025, 9, 19).toordinal(), "clv": 4800.5}
    call.start(profile)
    call.at(3, "utterance", speaker="customer", text="Can I renew?")
    detection = call.detections[0]
    assert detection.title == "Renewal"
    assert detection.text == "Ends September 19, 2025; worth €4,800; they said it"
