"""The proactive-care part of a case: a business event, what was sent before, the notices expected.

A case with `event:` is a notice case. The event happens at the case's `now`; the
customer's earlier notices count for deduplication and the caps:

    - name: a compromised card is texted at once, even at night
      now: 2025-03-03T23:30:00Z
      profile: {first_name: Alice, phone: "+31600000001", sms_opt_in: true}
      event: {type: card_compromised, attributes: {card_last4: "4242"}}
      notices_sent:                   # already sent (queued, held or sent) to this customer
        - {notice: service_outage, key: OUT-1, hours_ago: 2}   # or days_ago / at; urgent: true
      expect:
        notices:                      # exactly these go out (sent or held), in file order
          - {notice: card_compromised, channel: sms, status: send, text_contains: ["4242"]}
        suppressed: {renewal_offer: cap}   # notice → why it does not go out
"""

from __future__ import annotations

from datetime import UTC, datetime

import yaml

from decision_engine.authoring.case_model import NoticeExpectation, NoticesExpectation
from decision_engine.authoring.case_nodes import CaseNodes
from decision_engine.decide.notices import HELD, REASONS, SEND, BusinessEvent, SentNotice
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.ruleset.spec import NOTICE_CHANNELS, NoticeRules
from decision_engine.ruleset.typecheck import did_you_mean

_HOUR = 3600.0
_MAX_HOURS = 3650 * 24.0
_EVENT_KEYS = ("type", "attributes")
_SENT_KEYS = ("notice", "key", "hours_ago", "days_ago", "at", "urgent")
_AGO = ("hours_ago", "days_ago", "at")
_EXPECT_KEYS = ("notices", "suppressed")
_NOTICE_KEYS = (
    "notice", "channel", "status", "text_contains", "subject_contains", "held_until",
)  # fmt: skip
SUPPRESSED_REASONS = tuple(r for r in REASONS if r != "quiet_hours")
"""Why a notice is suppressed (quiet hours hold a notice, they do not suppress it)."""


class NoticeCaseReader:
    """Reads the notice parts of cases with the scalar readers of their file."""

    def __init__(self, r: CaseNodes, ruleset: CompiledRuleset) -> None:
        self.r = r
        self.rules: NoticeRules | None = ruleset.source.notices
        notices = self.rules.notices if self.rules is not None else ()
        self.notice_ids = [n.id for n in notices]
        self.urgent = {n.id: n.urgent for n in notices}
        self.on = {n.id: n.on for n in notices}

    def event(self, node: yaml.Node, now: float) -> BusinessEvent | None:
        """`{type, attributes}`: it happens at the case's `now`, to the case's customer."""
        r, rules = self.r, self.rules
        if rules is None:
            r.error(node, "the ruleset has no notices for `event:` to test")
            return None
        spec = r.mapping(node, "event", _EVENT_KEYS)
        if spec is None:
            return None
        if "type" not in spec:
            r.error(node, "an event names its type: {type: card_compromised, attributes: ...}")
            return None
        kind = r.choice(spec["type"], "event type", list(rules.events))
        if kind is None:
            return None
        declared = rules.events[kind].attributes
        attributes: dict[str, str] = {}
        for name, value_node in (r.mapping(spec.get("attributes"), "attributes") or {}).items():
            field = declared.get(name)
            if field is None:
                known = ", ".join(declared) or "none"
                r.error(
                    value_node,
                    f"event {kind} has no attribute {name!r}"
                    + (did_you_mean(name, list(declared)) or f" (its attributes: {known})"),
                )
            elif (text := r.typed(value_node, "attributes", field)) is not None:
                attributes[name] = text
        where = r.where(node)
        return BusinessEvent(
            f"case:{where.file}:{where.line}", kind, now, attributes, customer_id="case"
        )

    def sent(self, node: yaml.Node | None, now: float) -> tuple[SentNotice, ...]:
        """`{notice, key, hours_ago | days_ago | at, urgent}`: one notice already decided."""
        r = self.r
        out: list[SentNotice] = []
        for item in r.sequence(node, "notices_sent"):
            spec = r.mapping(item, "a sent notice", _SENT_KEYS)
            if spec is None:
                continue
            r.required(spec, "notice", item, "a sent notice")
            if sum(1 for k in _AGO if k in spec) != 1:
                r.error(item, "a sent notice has one of `hours_ago`, `days_ago` or `at`")
                continue
            notice = r.choice(spec.get("notice"), "notice", self.notice_ids)
            at = self.when(spec, now)
            urgent = r.boolean(spec.get("urgent"), "urgent")
            key = r.text(spec.get("key"), "key") or ""
            if notice is not None and at is not None:
                is_urgent = self.urgent.get(notice, False) if urgent is None else urgent
                out.append(SentNotice(notice, key, at, is_urgent))
        return tuple(out)

    def when(self, spec: dict[str, yaml.Node], now: float) -> float | None:
        r = self.r
        if "at" in spec:
            at = r.moment(spec["at"], "at")
            if at is not None and at > now:
                r.error(spec["at"], "a sent notice is sent after the case's `now`")
                return None
            return at
        key = "hours_ago" if "hours_ago" in spec else "days_ago"
        scale = 1.0 if key == "hours_ago" else 24.0
        ago = r.number(spec[key], key, 0, _MAX_HOURS / scale)
        return None if ago is None else now - ago * scale * _HOUR

    def expect(self, node: yaml.Node, event: str | None) -> NoticesExpectation | None:
        r = self.r
        spec = r.mapping(node, "expect", _EXPECT_KEYS)
        if spec is None:
            return None
        if not spec:
            r.error(node, "expect says nothing: add notices (those that go out, in order; "
                    "[] for none) or suppressed (notice: reason)")  # fmt: skip
            return None
        notices = None
        if "notices" in spec:
            found = [self.notice(item, event) for item in r.sequence(spec["notices"], "notices")]
            if any(n is None for n in found):
                return None
            notices = tuple(n for n in found if n is not None)
        suppressed: list[tuple[str, str]] = []
        for notice, reason_node in (r.mapping(spec.get("suppressed"), "suppressed") or {}).items():
            reason = r.choice(reason_node, f"suppressed {notice}", SUPPRESSED_REASONS)
            if self.known(notice, reason_node, event) and reason is not None:
                suppressed.append((notice, reason))
        return NoticesExpectation(notices, tuple(suppressed))

    def notice(self, node: yaml.Node, event: str | None) -> NoticeExpectation | None:
        r = self.r
        spec = r.mapping(node, "an expected notice", _NOTICE_KEYS)
        if spec is None:
            return None
        if "notice" not in spec:
            r.error(node, "an expected notice names its notice: {notice: card_compromised}")
            return None
        notice = r.text(spec["notice"], "notice")
        status = r.choice(spec.get("status"), "status", (SEND, HELD))
        held_until = self.moment(spec.get("held_until"), "held_until")
        if held_until is not None and status == SEND:
            r.error(spec["held_until"], "a notice sent at once (status: send) is not held")
        if notice is None or not self.known(notice, spec["notice"], event):
            return None
        return NoticeExpectation(
            notice=notice,
            where=r.where(node),
            channel=r.choice(spec.get("channel"), "channel", NOTICE_CHANNELS),
            status=HELD if held_until is not None else status,
            text_contains=self.texts(spec.get("text_contains"), "text_contains"),
            subject_contains=self.texts(spec.get("subject_contains"), "subject_contains"),
            held_until=held_until,
        )

    def known(self, notice: str, node: yaml.Node, event: str | None) -> bool:
        """A notice of the ruleset that reacts to the case's event (else it is a problem)."""
        r = self.r
        if not self.on:
            return False  # the ruleset has no notices: said once, at `event:`
        if notice not in self.on:
            known = ", ".join(self.notice_ids)
            hint = did_you_mean(notice, self.notice_ids) or f" (known: {known})"
            r.error(node, f"notice: unknown {notice!r}{hint}")
            return False
        if event is not None and self.on[notice] != event:
            r.error(node, f"notice {notice} reacts to {self.on[notice]}, not to {event}")
            return False
        return True

    def moment(self, node: yaml.Node | None, what: str) -> datetime | None:
        """An ISO datetime, UTC unless it says otherwise, keeping its offset."""
        seconds = self.r.moment(node, what)
        if node is None or seconds is None:
            return None
        parsed = datetime.fromisoformat(str(node.value).strip())
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)

    def texts(self, node: yaml.Node | None, what: str) -> tuple[str, ...]:
        if node is None:
            return ()
        items = [node] if isinstance(node, yaml.ScalarNode) else self.r.sequence(node, what)
        return tuple(t for item in items if (t := self.r.text(item, what)) is not None)
