"""The notices section: business events, and the notices they send before anyone calls.

    notices:
      channels:                         # how each channel reaches a customer
        sms:   {address: phone, consent: sms_opt_in}
        email: {address: email, opt_out: email_opt_out}
      preferred: preferred_channel      # the customer's channel, tried first when allowed
      timezone: timezone                # quiet hours are the customer's local time
      default_timezone: Europe/Amsterdam
      quiet_hours: {from: "21:00", to: "08:00"}
      caps: {per_day: 2, per_week: 4}   # non-urgent notices per customer
      audiences: [flight]               # profile fields an event may address customers by
      events:
        card_compromised: {attributes: {card_last4: {type: string}}}
        contract_end_in_60_days: {date: contract_end, days_before: 60}   # the sweep raises it
      rules:
        - id: card-compromised
          on: card_compromised
          urgent: true                  # sent in quiet hours too, and not capped
          channels: [sms, app, email]   # fallback order
          use_preferred: false          # this order, not the customer's preferred channel
          dedupe: {key: "{card_last4}", within: 7d}
          messages:
            sms: "Your card ending {card_last4} is blocked ..."
            email: {subject: "Your card is blocked", text: "..."}

The parsed form is in spec.py; deciding what to send is decide/notices.py's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from decision_engine.ruleset.rule_nodes import RuleNodes
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.spec import (
    NOTICE_CHANNELS,
    EventType,
    Message,
    NoticeChannel,
    NoticeRules,
    NoticeSpec,
    QuietHours,
)
from decision_engine.ruleset.template import Template
from decision_engine.ruleset.typecheck import did_you_mean
from decision_engine.vocabulary import id_problem

_KEYS = (
    "channels", "preferred", "timezone", "default_timezone", "quiet_hours", "caps",
    "audiences", "events", "rules",
)  # fmt: skip
_RULE_KEYS = (
    "id", "description", "on", "when", "urgent", "channels", "use_preferred", "dedupe", "messages",
)  # fmt: skip
_DEFAULT_DEDUPE = 86_400.0
_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")

FieldReader = Callable[[RuleNodes, str, yaml.Node, str, list[str]], FieldSpec | None]
"""Reads one declared field (the schema's reader), for event attributes."""


def notice_rules(
    parts: list[tuple[RuleNodes, yaml.Node]],
    fields: dict[str, FieldSpec],
    read_field: FieldReader,
    *,
    currency: str = "",
) -> NoticeRules | None:
    """The `notices:` section (it lives in one file), or None when there is none."""
    if not parts:
        return None
    r, node = parts[0]
    for other, extra in parts[1:]:
        other.error(extra, "notices is declared twice; keep it in one file")
    section = r.mapping(node, "notices", _KEYS)
    profile = {n: f for n, f in fields.items() if f.source == "profile"}
    channels = _channels(r, section.get("channels"), profile)
    events = _events(r, section.get("events"), fields, read_field)
    rules = NoticeRules(
        channels=channels,
        events=events,
        notices=(),
        preferred=_profile_field(
            r, section.get("preferred"), "preferred", profile, ("enum", "string")
        ),
        timezone_field=_profile_field(
            r, section.get("timezone"), "timezone", profile, ("string", "enum")
        ),
        default_timezone=_zone(r, section.get("default_timezone")),
        quiet_hours=_quiet_hours(r, section.get("quiet_hours")),
        audiences=tuple(
            name
            for name in r.names(section.get("audiences"), "audiences")
            if _profile_field(
                r, section["audiences"], "audiences", profile, ("string", "enum", "integer"), name
            )
        ),
    )
    caps = r.mapping(section.get("caps"), "notice caps", ("per_day", "per_week"))
    notices = tuple(
        spec
        for item in r.sequence(section.get("rules"), "notice rules")
        if (spec := _notice(r, item, rules, fields, currency)) is not None
    )
    return NoticeRules(
        channels=rules.channels,
        events=rules.events,
        notices=notices,
        preferred=rules.preferred,
        timezone_field=rules.timezone_field,
        default_timezone=rules.default_timezone,
        quiet_hours=rules.quiet_hours,
        per_day=r.integer(caps["per_day"], "caps per_day", 0, 0, 100)
        if "per_day" in caps
        else None,
        per_week=r.integer(caps["per_week"], "caps per_week", 0, 0, 700)
        if "per_week" in caps
        else None,
        audiences=rules.audiences,
    )


def declared_notices(parts: list[tuple[RuleNodes, yaml.Node]]) -> frozenset[str]:
    """The notice ids written, valid or not, for days_since_notice() in other sections."""
    ids: set[str] = set()
    for _, node in parts:
        rules = _value(node, "rules")
        for item in rules.value if isinstance(rules, yaml.SequenceNode) else ():
            found = _value(item, "id")
            if isinstance(found, yaml.ScalarNode):
                ids.add(str(found.value))
    return frozenset(ids)


def _value(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value in node.value:
            if key_node.value == key:
                found: yaml.Node = value
                return found
    return None


def notice_fields(
    rules: NoticeRules, event: str, fields: dict[str, FieldSpec]
) -> dict[str, FieldSpec]:
    """What a notice on `event` may name: the profile, derived dates and the event's attributes."""
    known = {
        n: f for n, f in fields.items() if f.source == "profile" or n == "days_to_contract_end"
    }
    spec = rules.events.get(event)
    if spec is not None:
        known.update(spec.attributes)
    return known


def _channels(
    r: RuleNodes, node: yaml.Node | None, profile: dict[str, FieldSpec]
) -> dict[str, NoticeChannel]:
    out: dict[str, NoticeChannel] = {}
    for channel, spec_node in r.mapping(node, "notice channels").items():
        if channel not in NOTICE_CHANNELS:
            r.error(
                spec_node,
                f"notice channel {channel!r} is not one of {', '.join(NOTICE_CHANNELS)}"
                + did_you_mean(channel, list(NOTICE_CHANNELS)),
            )
            continue
        spec = r.mapping(spec_node, f"notice channel {channel}", ("address", "consent", "opt_out"))
        if "address" not in spec:
            r.error(
                spec_node,
                f"notice channel {channel} names its address field, e.g. {{address: phone}}",
            )
            continue
        address = _profile_field(r, spec["address"], f"{channel} address", profile, ("string",))
        consent = _profile_field(r, spec.get("consent"), f"{channel} consent", profile, ("bool",))
        opt_out = _profile_field(r, spec.get("opt_out"), f"{channel} opt_out", profile, ("bool",))
        if address is not None:
            out[channel] = NoticeChannel(channel, address, consent, opt_out, r.where(spec_node))
    return out


def _events(
    r: RuleNodes,
    node: yaml.Node | None,
    fields: dict[str, FieldSpec],
    read_field: FieldReader,
) -> dict[str, EventType]:
    profile = {n: f for n, f in fields.items() if f.source == "profile"}
    out: dict[str, EventType] = {}
    for name, spec_node in r.mapping(node, "notice events").items():
        problem = id_problem(name)
        if problem:
            r.error(spec_node, f"event type {name!r}: {problem}")
            continue
        spec = r.mapping(
            spec_node, f"event {name}", ("attributes", "date", "days_before", "description")
        )
        attributes: dict[str, FieldSpec] = {}
        for attr, attr_node in r.mapping(
            spec.get("attributes"), f"event {name} attributes"
        ).items():
            if attr in fields:
                r.error(
                    attr_node,
                    f"event {name} attribute {attr!r} is also a {fields[attr].source} field; "
                    "pick another name",
                )
                continue
            field = read_field(r, attr, attr_node, "event", [])
            if field is not None:
                attributes[attr] = field
        date_field = _profile_field(r, spec.get("date"), f"event {name} date", profile, ("date",))
        if "days_before" in spec and "date" not in spec:
            r.error(spec["days_before"], f"event {name}: days_before needs a `date:` profile field")
        out[name] = EventType(
            name,
            attributes,
            r.where(spec_node),
            date_field=date_field,
            days_before=r.integer(spec.get("days_before"), "days_before", 0, 0, 3650),
        )
    return out


def _notice(
    r: RuleNodes,
    node: yaml.Node,
    rules: NoticeRules,
    all_fields: dict[str, FieldSpec],
    currency: str,
) -> NoticeSpec | None:
    if not isinstance(node, yaml.MappingNode):
        r.error(node, "a notice rule is a mapping (id, on, channels, messages, ...)")
        return None
    spec = r.mapping(node, "notice rule", _RULE_KEYS)
    for required in ("id", "on", "messages"):
        if required not in spec:
            r.error(node, f"notice rule has no {required}")
            return None
    notice_id = r.text(spec["id"], "notice id")
    problem = id_problem(notice_id)
    if problem:
        r.error(spec["id"], f"notice id {notice_id!r}: {problem}")
    what = f"notice {notice_id}"
    on = r.text(spec["on"], f"{what} on")
    if on not in rules.events:
        r.error(
            spec["on"],
            f"{what}: event type {on!r} is not declared under notices: events"
            + did_you_mean(on, list(rules.events)),
        )
        return None
    fields = notice_fields(rules, on, all_fields)
    channels = r.names(spec.get("channels"), f"{what} channels") or tuple(rules.channels)
    for channel in channels:
        if channel not in rules.channels:
            r.error(
                spec.get("channels", node),
                f"{what}: channel {channel!r} has no address (declare it under notices: channels)"
                + did_you_mean(channel, list(rules.channels)),
            )
    messages = _messages(r, spec["messages"], what, channels, fields, currency)
    dedupe = r.mapping(spec.get("dedupe"), f"{what} dedupe", ("key", "within"))
    key = r.template(dedupe.get("key"), f"{what} dedupe key", fields, currency=currency)
    within = r.duration(dedupe.get("within"), f"{what} dedupe within", 60, 366 * 86_400)
    return NoticeSpec(
        id=notice_id,
        on=on,
        when=r.conditions(spec.get("when"), what, fields),
        urgent=r.boolean(spec.get("urgent"), f"{what} urgent"),
        use_preferred=r.boolean(spec["use_preferred"], f"{what} use_preferred")
        if "use_preferred" in spec
        else True,
        channels=channels,
        messages=messages,
        dedupe_key=key,
        dedupe_within=_DEFAULT_DEDUPE if within is None else within,
        where=r.where(node),
        description=r.text(spec.get("description"), "description", ""),
    )


def _messages(
    r: RuleNodes,
    node: yaml.Node,
    what: str,
    channels: tuple[str, ...],
    fields: dict[str, FieldSpec],
    currency: str,
) -> dict[str, Message]:
    out: dict[str, Message] = {}
    entries = r.mapping(node, f"{what} messages")
    for channel, message_node in entries.items():
        if channel not in channels:
            r.error(
                message_node, f"{what}: a message for {channel!r}, which is not among its channels"
            )
            continue
        subject: Template | None = None
        if isinstance(message_node, yaml.MappingNode):
            parts = r.mapping(message_node, f"{what} {channel} message", ("subject", "text"))
            subject = r.template(
                parts.get("subject"), f"{what} {channel} subject", fields, currency=currency
            )
            text = r.template(
                parts.get("text"), f"{what} {channel} text", fields, currency=currency
            )
            if "text" not in parts:
                r.error(message_node, f"{what} {channel} message has no text")
        else:
            text = r.template(message_node, f"{what} {channel} message", fields, currency=currency)
        if channel == "email" and subject is None:
            r.error(
                message_node, f"{what}: an email message has a subject: {{subject: ..., text: ...}}"
            )
        if text is not None:
            out[channel] = Message(channel, subject, text)
    for channel in channels:
        if channel not in entries:
            r.error(node, f"{what}: no message for its channel {channel!r}")
    return out


def _profile_field(
    r: RuleNodes,
    node: yaml.Node | None,
    what: str,
    profile: dict[str, FieldSpec],
    kinds: tuple[str, ...],
    name: str | None = None,
) -> str | None:
    if node is None:
        return None
    name = name if name is not None else r.text(node, what)
    field = profile.get(name)
    if field is None:
        r.error(node, f"{what}: {name!r} is not a profile field" + did_you_mean(name, profile))
        return None
    if field.kind not in kinds:
        r.error(node, f"{what}: {name} is a {field.kind}, not a {' or '.join(kinds)} field")
        return None
    return name


def _zone(r: RuleNodes, node: yaml.Node | None) -> str:
    name = r.text(node, "default_timezone", "UTC")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        r.error(node, f"default_timezone {name!r} is not a time zone (e.g. Europe/Amsterdam)")
        return "UTC"
    return name


def _quiet_hours(r: RuleNodes, node: yaml.Node | None) -> QuietHours | None:
    if node is None:
        return None
    spec = r.mapping(node, "quiet_hours", ("from", "to"))
    minutes = []
    for key in ("from", "to"):
        text = r.text(spec.get(key), f"quiet_hours {key}", "")
        match = _TIME.fullmatch(text.strip())
        if match is None:
            r.error(spec.get(key, node), f'quiet_hours {key} is a local time HH:MM, e.g. "21:00"')
            return None
        minutes.append(int(match.group(1)) * 60 + int(match.group(2)))
    if minutes[0] == minutes[1]:
        r.error(node, "quiet_hours from and to are the same time")
        return None
    return QuietHours(minutes[0], minutes[1])
