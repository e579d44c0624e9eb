"""Read rule test case files into Cases, or CaseResults carrying located problems."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import yaml
import yaml.constructor

from decision_engine.authoring.case_model import (
    DEFAULT_ROUTE,
    Case,
    CaseResult,
    Expectation,
    MomentCase,
    NoticeCase,
    OffersExpectation,
    RoutingExpectation,
)
from decision_engine.authoring.case_nodes import CaseNodes
from decision_engine.authoring.moment_case_read import MAX_AT, MomentCaseReader
from decision_engine.authoring.notice_case_read import NoticeCaseReader
from decision_engine.decide.values import Contact, Context, CustomerState, NoticeRecord, OfferEvent
from decision_engine.errors import Where
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.ruleset.sections import MAX_OFFERS_LIMIT
from decision_engine.ruleset.typecheck import did_you_mean
from decision_engine.ruleset.yaml_nodes import yaml_files
from decision_engine.vocabulary import CHANNELS, OFFER_OUTCOMES

_DAY = 86_400.0
_FILE_KEYS = ("now", "description", "cases")
_CASE_KEYS = (
    "name", "description", "now", "profile", "contacts", "history", "notices", "caps_spent",
    "context",
    "interaction_id", "max_offers", "degraded", "expect",
)  # fmt: skip
_MOMENT_CASE_KEYS = (
    "name", "description", "now", "profile", "contacts", "context", "interaction_id", "events",
    "until", "expect",
)  # fmt: skip
"""A case with `events:` is a moment case (moment_case_read.py)."""
_NOTICE_CASE_KEYS = ("name", "description", "now", "profile", "event", "notices_sent", "expect")
"""A case with `event:` is a notice case (notice_case_read.py)."""
_HISTORY_KEYS = ("offer", "outcome", "days_ago", "at", "interaction_id")
_NOTICE_KEYS = ("notice", "channel", "status", "text", "days_ago", "hours_ago", "at")
_NOTICE_STATUSES = ("queued", "held", "sent", "failed", "dead_lettered", "delivered")
_CONTACT_KEYS = ("days_ago", "at", "channel", "intent", "interaction_id")
_CONTEXT_KEYS = ("channel", "intent", "queue", "agent_id", "sentiment", "ivr_path", "attributes")
_EXPECT_KEYS = ("routing", "offers", "script_contains", "profile_found", "degraded")
_ROUTING_KEYS = ("queue", "priority", "skip_ivr", "rule")
_OFFERS_KEYS = ("include", "exclude", "first", "order", "count", "categories_exclude")


def case_files(directory: Path) -> list[Path]:
    """The case files of a directory, in name order (hidden files are skipped)."""
    if not directory.is_dir():
        return []
    return yaml_files(directory)


def read_cases(
    path: Path, text: str, ruleset: CompiledRuleset, names: dict[str, Where]
) -> Iterator[Case | MomentCase | NoticeCase | CaseResult]:
    """Each case of one file, or a CaseResult carrying the problems that keep it from running.

    `names` holds the case names seen so far in any file: a name identifies a case.
    """
    return _CaseFile(str(path), ruleset, names).read(text)


class _CaseFile(CaseNodes):
    """Reads one case file from YAML nodes, which keep line and column for every problem.

    Readers take the node of an optional key (None when the key is absent) and return
    None both when it is absent and when it is wrong; a wrong value is also a problem.
    """

    def __init__(self, file: str, ruleset: CompiledRuleset, names: dict[str, Where]) -> None:
        super().__init__(file)
        self.names = names
        """Case names seen so far in any file: a name identifies a case in reports."""
        fields = ruleset.source.fields
        self.profile_fields = {n: s for n, s in fields.items() if s.source == "profile"}
        self.attribute_fields = {n: s for n, s in fields.items() if s.source == "attribute"}
        intent = fields.get("intent")
        self.intents = intent.values if intent is not None and intent.kind == "enum" else ()
        # Names in expectations are checked against the ruleset: a misspelt id in
        # `exclude` would otherwise pass for ever without testing anything.
        self.offer_ids = [o.spec.id for o in ruleset.offers]
        self.categories = sorted({o.spec.category for o in ruleset.offers})
        self.route_ids = [DEFAULT_ROUTE, *(r.id for r in ruleset.routes)]
        source = ruleset.source
        self.queues = sorted({source.default_route.queue, *(r.queue for r in source.routes)})
        self.moment_reader = MomentCaseReader(self, ruleset, self.intents)
        self.notice_reader = NoticeCaseReader(self, ruleset)

    def read(self, text: str) -> Iterator[Case | MomentCase | NoticeCase | CaseResult]:
        """Each case, or a CaseResult carrying the problems that keep it from running."""
        root = self.compose(text)
        if root is None:
            if not self.problems:  # else it is not YAML, and says where
                self.error(None, "the file is empty; it needs `now:` and `cases:`")
            yield self.file_error()
            return
        top = self.mapping(root, "a case file", _FILE_KEYS) or {}
        now = self.moment(top.get("now"), "now")
        items = self.sequence(top["cases"], "cases") if "cases" in top else []
        if "cases" not in top:
            self.error(root, "a case file has a `cases:` list")
        elif not items and not self.problems:
            self.error(top["cases"], "`cases:` is empty")
        if self.problems:
            # Without a readable top level no case can run; report the file once.
            yield self.file_error()
            return
        for node in items:
            start = len(self.problems)
            case = self.case(node, now)
            problems = tuple(sorted(self.problems[start:], key=lambda p: (p.line, p.column)))
            if case is not None and not problems:
                yield case
            else:
                yield CaseResult(self.case_name(node), self.where(node), problems=problems)

    # -- locating and reporting ------------------------------------------------------

    def file_error(self) -> CaseResult:
        """The whole file as one result, named after it, at its first problem."""
        first = min(self.problems, key=lambda p: (p.line, p.column))
        where = Where(self.file, first.line, first.column)
        return CaseResult(Path(self.file).name, where, problems=tuple(self.problems))

    # -- a case ----------------------------------------------------------------------

    def case_name(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == "name" and isinstance(value, yaml.ScalarNode) and value.value:
                    return str(value.value)
        return f"case at line {node.start_mark.line + 1}"

    def case(
        self, node: yaml.Node, file_now: float | None
    ) -> Case | MomentCase | NoticeCase | None:
        keys = {k.value for k, _ in node.value} if isinstance(node, yaml.MappingNode) else set()
        is_moment = "events" in keys
        is_notice = "event" in keys and not is_moment
        allowed = _MOMENT_CASE_KEYS if is_moment else _NOTICE_CASE_KEYS if is_notice else _CASE_KEYS
        spec = self.mapping(node, "a case", allowed)
        if spec is None:
            return None
        for key in ("name", "event" if is_notice else "context", "expect"):
            self.required(spec, key, node, "a case")
        name = self.text(spec.get("name"), "name")
        if name is not None and name in self.names:
            self.error(spec["name"], f"duplicate case name {name!r} (first at {self.names[name]})")
        elif name is not None:
            self.names[name] = self.where(node)
        now = self.moment(spec["now"], "now") if "now" in spec else file_now
        if "now" not in spec and file_now is None:
            self.error(node, "no `now`: set it at the top of the file or in the case")
        if is_moment:
            return self.moment_case(node, spec, name, now)
        if is_notice:
            return self.notice_case(node, spec, name, now)
        degraded = self.boolean(spec.get("degraded"), "degraded") is True
        if degraded and ("profile" in spec or "contacts" in spec):
            self.error(node, "a degraded case has no profile or contacts: the store is down")
        profile = self.profile(spec["profile"]) if "profile" in spec else None
        contacts = self.contacts(spec.get("contacts"), now) if now is not None else ()
        history = self.history(spec.get("history"), now) if now is not None else {}
        notices = self.notices(spec.get("notices"), now) if now is not None else {}
        caps_spent = self.choices(spec.get("caps_spent"), "caps_spent", self.offer_ids) or ()
        context = self.context(spec["context"]) if "context" in spec else None
        interaction_id = self.text(spec.get("interaction_id"), "interaction_id") or ""
        max_offers = self.integer(spec.get("max_offers"), "max_offers", 1, MAX_OFFERS_LIMIT)
        expect = self.expect(spec["expect"]) if "expect" in spec else None
        if name is None or now is None or context is None or expect is None:
            return None
        return Case(
            name=name,
            where=self.where(node),
            now=now,
            state=CustomerState(profile, contacts, history, notices),
            context=context,
            interaction_id=interaction_id,
            max_offers=max_offers or 0,
            degraded=degraded,
            expect=expect,
            caps_spent=frozenset(caps_spent),
        )

    def moment_case(
        self, node: yaml.Node, spec: dict[str, yaml.Node], name: str | None, now: float | None
    ) -> MomentCase | None:
        if not self.moment_reader.moment_ids:
            self.error(spec["events"], "the ruleset has no moments for `events:` to test")
            return None
        profile = self.profile(spec["profile"]) if "profile" in spec else None
        contacts = self.contacts(spec.get("contacts"), now) if now is not None else ()
        context = self.context(spec["context"]) if "context" in spec else None
        events = self.moment_reader.events(spec["events"])
        until = self.number(spec.get("until"), "until", 0.0, MAX_AT)
        if until is not None and events and until < events[-1].at:
            self.error(
                spec["until"], f"until {until:g} is before the last event ({events[-1].at:g})"
            )
        expect = self.moment_reader.expect(spec["expect"]) if "expect" in spec else None
        if name is None or now is None or context is None or events is None or expect is None:
            return None
        return MomentCase(
            name=name,
            where=self.where(node),
            now=now,
            state=CustomerState(profile, contacts),
            context=context,
            interaction_id=self.text(spec.get("interaction_id"), "interaction_id") or "",
            events=events,
            until=until,
            expect=expect,
        )

    def notice_case(
        self, node: yaml.Node, spec: dict[str, yaml.Node], name: str | None, now: float | None
    ) -> NoticeCase | None:
        reader = self.notice_reader
        profile = self.profile(spec["profile"]) if "profile" in spec else None
        event = reader.event(spec["event"], now or 0.0)
        sent = reader.sent(spec.get("notices_sent"), now) if now is not None else ()
        kind = event.type if event is not None else None
        expect = reader.expect(spec["expect"], kind) if "expect" in spec else None
        if name is None or now is None or event is None or expect is None:
            return None
        return NoticeCase(
            name=name,
            where=self.where(node),
            now=now,
            profile=profile,
            event=event,
            sent=sent,
            expect=expect,
        )

    def history(self, node: yaml.Node | None, now: float) -> dict[str, tuple[OfferEvent, ...]]:
        """Earlier outcomes of offers: `{offer, outcome, days_ago | at, interaction_id}`."""
        out: dict[str, list[OfferEvent]] = {}
        for item in self.sequence(node, "history"):
            spec = self.mapping(item, "a history event", _HISTORY_KEYS)
            if spec is None:
                continue
            self.required(spec, "offer", item, "a history event")
            self.required(spec, "outcome", item, "a history event")
            if ("days_ago" in spec) == ("at" in spec):
                self.error(item, "a history event has either `days_ago` or `at`")
            days = self.number(spec.get("days_ago"), "days_ago", 0, 3650)
            at = self.moment(spec.get("at"), "at") if days is None else now - days * _DAY
            offer = self.choice(spec.get("offer"), "offer", self.offer_ids)
            outcome = self.choice(spec.get("outcome"), "outcome", OFFER_OUTCOMES)
            interaction_id = self.text(spec.get("interaction_id"), "interaction_id") or ""
            if at is not None and offer is not None and outcome is not None:
                out.setdefault(offer, []).append(OfferEvent(at, outcome, interaction_id))
        return {offer: tuple(sorted(events, key=lambda e: e.at)) for offer, events in out.items()}

    def notices(self, node: yaml.Node | None, now: float) -> dict[str, NoticeRecord]:
        """Notices the customer was sent: `{notice, channel, status, days_ago | hours_ago | at}`
        (the latest of each notice id counts, as in the store's notice log)."""
        out: dict[str, NoticeRecord] = {}
        for item in self.sequence(node, "notices"):
            spec = self.mapping(item, "a notice sent", _NOTICE_KEYS)
            if spec is None:
                continue
            self.required(spec, "notice", item, "a notice sent")
            given = [k for k in ("days_ago", "hours_ago", "at") if k in spec]
            if len(given) != 1:
                self.error(item, "a notice sent has one of `days_ago`, `hours_ago` or `at`")
                continue
            if given[0] == "at":
                at = self.moment(spec["at"], "at")
            else:
                ago = self.number(spec[given[0]], given[0], 0, 3650 * 24)
                unit = _DAY if given[0] == "days_ago" else _DAY / 24
                at = None if ago is None else now - ago * unit
            notice = self.choice(spec.get("notice"), "notice", self.notice_reader.notice_ids)
            status = self.choice(spec.get("status"), "status", _NOTICE_STATUSES) or "sent"
            channel = self.text(spec.get("channel"), "channel") or ""
            text = self.text(spec.get("text"), "text") or ""
            if at is not None and notice is not None:
                out[notice] = NoticeRecord(notice, channel, status, text, at, at)
        return out

    def profile(self, node: yaml.Node) -> dict[str, str] | None:
        """None (unknown customer) for `profile: null`; else the stored text of each field."""
        if isinstance(node, yaml.ScalarNode) and self.value(node) is None:
            return None
        out: dict[str, str] = {}
        for key, value_node in (self.mapping(node, "profile") or {}).items():
            field_spec = self.profile_fields.get(key)
            if field_spec is None:
                # The import would keep it, but no rule can read it: most likely a typo.
                hint = did_you_mean(key, list(self.profile_fields))
                self.error(value_node, f"profile: {key!r} is not a profile field{hint}")
            elif (text := self.typed(value_node, "profile", field_spec)) is not None:
                out[key] = text
        return out

    def contacts(self, node: yaml.Node | None, now: float) -> tuple[Contact, ...]:
        out: list[Contact] = []
        for n, item in enumerate(self.sequence(node, "contacts"), start=1):
            spec = self.mapping(item, "a contact", _CONTACT_KEYS)
            if spec is None:
                continue
            self.required(spec, "channel", item, "a contact")
            if ("days_ago" in spec) == ("at" in spec):
                self.error(item, "a contact has either `days_ago` or `at`")
            days = self.number(spec.get("days_ago"), "days_ago", 0, 3650)
            at = self.moment(spec.get("at"), "at") if days is None else now - days * _DAY
            channel = self.choice(spec.get("channel"), "channel", CHANNELS)
            intent = self.choice(spec.get("intent"), "intent", self.intents) or ""
            contact_id = self.text(spec.get("interaction_id"), "interaction_id")
            if at is not None and channel is not None:
                out.append(Contact(contact_id or f"case-contact-{n}", channel, intent, at))
        return tuple(out)

    def context(self, node: yaml.Node) -> Context | None:
        spec = self.mapping(node, "context", _CONTEXT_KEYS)
        if spec is None:
            return None
        self.required(spec, "channel", node, "context")
        channel = self.choice(spec.get("channel"), "channel", CHANNELS)
        attributes: dict[str, str] = {}
        for key, value_node in (self.mapping(spec.get("attributes"), "attributes") or {}).items():
            attr = self.attribute_fields.get(key)
            if attr is None:
                # The server would pass it on, but no rule can read it: most likely a typo.
                hint = did_you_mean(key, list(self.attribute_fields))
                self.error(value_node, f"attributes: {key!r} is not a declared attribute{hint}")
            elif (text := self.typed(value_node, "attributes", attr)) is not None:
                attributes[key] = text
        # Every key is read before giving up, so one run reports all of its problems.
        context = Context(
            channel=channel or "",
            intent=self.choice(spec.get("intent"), "intent", self.intents) or "",
            queue=self.text(spec.get("queue"), "queue") or "",
            agent_id=self.text(spec.get("agent_id"), "agent_id") or "",
            sentiment=self.number(spec.get("sentiment"), "sentiment", -1, 1),
            ivr_path=self.text(spec.get("ivr_path"), "ivr_path") or "",
            attributes=attributes,
        )
        return context if channel is not None else None

    def expect(self, node: yaml.Node) -> Expectation | None:
        spec = self.mapping(node, "expect", _EXPECT_KEYS)
        if spec is None:
            return None
        if isinstance(node, yaml.MappingNode) and not node.value:
            self.error(node, "expect says nothing: add routing, offers, script_contains, ...")
            return None
        scripts: list[tuple[str, tuple[str, ...]]] = []
        for key, value in (
            self.mapping(spec.get("script_contains"), "script_contains") or {}
        ).items():
            if key not in self.offer_ids:
                hint = did_you_mean(key, self.offer_ids)
                self.error(value, f"script_contains: unknown offer {key!r}{hint}")
                continue
            items = [value] if isinstance(value, yaml.ScalarNode) else self.sequence(value, key)
            scripts.append((key, tuple(t for i in items if (t := self.text(i, key)) is not None)))
        return Expectation(
            routing=self.routing(spec.get("routing")),
            offers=self.offers(spec.get("offers")),
            script_contains=tuple(scripts),
            profile_found=self.boolean(spec.get("profile_found"), "profile_found"),
            degraded=self.boolean(spec.get("degraded"), "degraded"),
        )

    def routing(self, node: yaml.Node | None) -> RoutingExpectation | None:
        spec = self.mapping(node, "expect routing", _ROUTING_KEYS)
        if spec is None:
            return None
        return RoutingExpectation(
            queue=self.choice(spec.get("queue"), "routing queue", self.queues),
            priority=self.integer(spec.get("priority"), "routing priority", 1, 10),
            skip_ivr=self.boolean(spec.get("skip_ivr"), "skip_ivr"),
            rule=self.choice(spec.get("rule"), "routing rule", self.route_ids),
        )

    def offers(self, node: yaml.Node | None) -> OffersExpectation | None:
        spec = self.mapping(node, "expect offers", _OFFERS_KEYS)
        if spec is None:
            return None

        def ids(key: str) -> tuple[str, ...] | None:
            return self.choices(spec.get(key), f"offers {key}", self.offer_ids)

        categories = self.choices(
            spec.get("categories_exclude"), "categories_exclude", self.categories
        )
        return OffersExpectation(
            include=ids("include") or (),
            exclude=ids("exclude") or (),
            first=self.choice(spec.get("first"), "offers first", self.offer_ids),
            order=ids("order"),
            count=self.integer(spec.get("count"), "offers count", 0, MAX_OFFERS_LIMIT),
            categories_exclude=categories or (),
        )
