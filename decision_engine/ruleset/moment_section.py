"""The moments section: what each moment waits for, when it applies and what it does.

    moments:
      - id: cancel-mentioned
        pattern: {event: utterance, says: [cancel, competitor], where: speaker == "customer"}
        when: clv >= 1500                      # optional: profile, context, interaction state
        guidance: {kind: offer, title: Wants to leave, text: "...", severity: warning}
        set: {intent: cancel}                  # context updates for the re-decision
        decide: true                           # ask for a re-decision
        route: {queue: retention, priority: 2} # transfer
        supersedes: [other-moment]
        repeat: {cooldown: 5m}                 # instead of the default once per interaction

The pattern is read by moment_pattern.py; the parsed form is in spec.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from decision_engine.errors import Problem
from decision_engine.ruleset.moment_fields import event_fields, when_fields
from decision_engine.ruleset.moment_pattern import MAX_WINDOW, MIN_WINDOW, pattern
from decision_engine.ruleset.rule_nodes import RuleNodes
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.spec import Guidance, MomentSpec, Transfer
from decision_engine.ruleset.typecheck import did_you_mean
from decision_engine.vocabulary import EVENT_FIELDS, GUIDANCE_KINDS, SEVERITIES, id_problem

_KEYS = (
    "id",
    "description",
    "pattern",
    "when",
    "once",
    "repeat",
    "supersedes",
    "guidance",
    "set",
    "decide",
    "route",
)
_SETTABLE = ("intent", "queue")
"""Context fields a moment may set, besides the declared attributes."""


@dataclass(frozen=True, slots=True)
class MomentScope:
    """What a moment may name: the ruleset's fields, intents and queues."""

    fields: dict[str, FieldSpec]
    intents: tuple[str, ...]
    queues: tuple[str, ...]
    currency: str = ""
    """The ruleset's currency, for `{field:money}` in guidance texts."""


def moment(r: RuleNodes, node: yaml.Node, scope: MomentScope) -> MomentSpec | None:
    """One moment; None (with located problems) when it cannot be used."""
    if not isinstance(node, yaml.MappingNode):
        r.error(node, "a moment must be a mapping (id, pattern, guidance, ...)")
        return None
    spec = r.mapping(node, "moment", _KEYS)
    if "id" not in spec:
        r.error(node, "moment has no id")
        return None
    moment_id = r.text(spec["id"], "moment id")
    problem = id_problem(moment_id) if moment_id else None
    if problem is not None:
        # Guidance ids and the desktop name the moment, so it is an id like an offer's.
        r.error(spec["id"], f"moment id {moment_id!r}: {problem}")
    what = f"moment {moment_id}"
    for required in ("pattern", "guidance"):
        if required not in spec:
            hint = " (what should the agent see?)" if required == "guidance" else ""
            r.error(node, f"{what} has no {required}{hint}")
    found = pattern(r, spec["pattern"], what, scope.intents) if "pattern" in spec else None
    when = r.conditions(spec.get("when"), f"{what} when", when_fields(scope.fields))
    once, cooldown = _repetition(r, node, spec, what)
    trigger = found.trigger.kind if found is not None else None
    guidance = _guidance(r, spec["guidance"], what, scope, trigger) if "guidance" in spec else None
    context = _context(r, spec.get("set"), what, scope)
    transfer = _transfer(r, spec.get("route"), what, scope)
    supersedes = r.names(spec.get("supersedes"), f"{what} supersedes")
    decide = r.boolean(spec.get("decide"), f"{what} decide") if "decide" in spec else False
    if found is None or guidance is None or problem is not None:
        return None
    return MomentSpec(
        id=moment_id,
        pattern=found,
        when=when,
        once=once,
        cooldown=cooldown,
        supersedes=tuple(dict.fromkeys(supersedes)),
        guidance=guidance,
        context=context,
        decide=decide,
        transfer=transfer,
        where=r.where(node),
        description=r.text(spec.get("description"), "description", ""),
    )


def _repetition(
    r: RuleNodes, node: yaml.Node, spec: dict[str, yaml.Node], what: str
) -> tuple[bool, float]:
    """(once, cooldown): once per interaction unless `repeat: {cooldown: ...}`."""
    once_node, repeat_node = spec.get("once"), spec.get("repeat")
    once = r.boolean(once_node, f"{what} once") if once_node is not None else repeat_node is None
    if repeat_node is None:
        if not once:
            r.error(once_node, f"{what}: once: false needs repeat: {{cooldown: 2m}}")
        return True, 0.0
    if once_node is not None and once:
        r.error(once_node, f"{what}: once: true and repeat contradict each other; keep one")
    repeat = r.mapping(repeat_node, f"{what} repeat", ("cooldown",))
    if "cooldown" not in repeat:
        r.error(repeat_node, f"{what}: repeat needs a cooldown, e.g. repeat: {{cooldown: 2m}}")
        return False, MIN_WINDOW
    cooldown = r.duration(repeat["cooldown"], f"{what} cooldown", MIN_WINDOW, MAX_WINDOW)
    return False, cooldown if cooldown is not None else MIN_WINDOW


def _guidance(
    r: RuleNodes, node: yaml.Node, what: str, scope: MomentScope, trigger: str | None
) -> Guidance | None:
    spec = r.mapping(node, f"{what} guidance", ("kind", "title", "text", "severity"))
    if not isinstance(node, yaml.MappingNode):
        return None
    for required in ("kind", "title", "text"):
        if required not in spec:
            r.error(node, f"{what}: guidance has no {required}")
    kind = _choice(r, spec.get("kind"), f"{what} guidance kind", GUIDANCE_KINDS, "")
    severity = _choice(r, spec.get("severity"), f"{what} severity", SEVERITIES, "info")
    # Placeholders name a profile, context or interaction field, or a field of the event
    # the guidance is about (the pattern's last event, or an absence's anchor).
    known = when_fields(scope.fields)
    if trigger is not None:
        # Word lists have no type a condition could test; they read as text.
        words = {n: FieldSpec(n, "string", source="event") for n in EVENT_FIELDS[trigger]}
        known = {**known, **words, **event_fields(trigger, scope.intents)}
    title = r.template(spec.get("title"), f"{what} guidance title", known, currency=scope.currency)
    text = r.template(spec.get("text"), f"{what} guidance text", known, currency=scope.currency)
    if title is None or text is None or kind is None or severity is None:
        return None
    return Guidance(kind, title, text, severity)


def _choice(
    r: RuleNodes, node: yaml.Node | None, what: str, allowed: Sequence[str], default: str
) -> str | None:
    if node is None:
        return default or None
    value = r.text(node, what)
    if value not in allowed:
        r.error(
            node,
            f"{what} must be one of {', '.join(allowed)}" + did_you_mean(value, list(allowed)),
        )
        return None
    return value


def _context(
    r: RuleNodes, node: yaml.Node | None, what: str, scope: MomentScope
) -> tuple[tuple[str, str], ...]:
    """`set:` as (field, canonical text): the values a decision would read."""
    settable = {n: s for n, s in scope.fields.items() if n in _SETTABLE or s.source == "attribute"}
    out: list[tuple[str, str]] = []
    for name, value_node in r.mapping(node, f"{what} set").items():
        spec = settable.get(name)
        if spec is None:
            hint = did_you_mean(name, list(settable)) or f" (it may set {', '.join(settable)})"
            r.error(value_node, f"{what} set: {name!r} is not a context field{hint}")
            continue
        raw = r.text(value_node, f"{what} set {name}")
        try:
            out.append((name, spec.to_text(spec.parse(raw))))
        except ValueError as exc:
            r.error(value_node, f"{what} set: {exc}")
    return tuple(out)


def _transfer(
    r: RuleNodes, node: yaml.Node | None, what: str, scope: MomentScope
) -> Transfer | None:
    if node is None:
        return None
    spec = r.mapping(node, f"{what} route", ("queue", "priority"))
    if "queue" not in spec:
        r.error(node, f"{what}: route needs a queue, e.g. route: {{queue: retention}}")
        return None
    queue = r.text(spec["queue"], f"{what} route queue")
    if queue not in scope.queues:
        r.error(
            spec["queue"],
            f"{what}: no routing rule or default route uses queue {queue!r}"
            + (did_you_mean(queue, list(scope.queues)) or f" (queues: {', '.join(scope.queues)})"),
        )
        return None
    return Transfer(queue, r.integer(spec.get("priority"), f"{what} route priority", 5, 1, 10))


def check_moments(moments: Sequence[MomentSpec], problems: list[Problem]) -> None:
    """Every `supersedes` names another moment, and no moment supersedes itself in a loop."""
    ids = {m.id for m in moments}
    graph: dict[str, tuple[str, ...]] = {}
    for m in moments:
        for other in m.supersedes:
            if other == m.id:
                problems.append(Problem(m.where, f"moment {m.id} supersedes itself"))
            elif other not in ids:
                hint = did_you_mean(other, sorted(ids))
                problems.append(
                    Problem(
                        m.where, f"moment {m.id} supersedes {other!r}, which is not a moment{hint}"
                    )
                )
        graph[m.id] = tuple(o for o in m.supersedes if o in ids and o != m.id)
    for m in moments:
        loop = _loop(m.id, graph)
        if loop is not None:
            shown = " → ".join(loop)
            problems.append(
                Problem(
                    m.where,
                    f"moment {m.id}: supersedes goes round in a circle "
                    f"({shown}); one of them has to give way",
                )
            )


def _loop(start: str, graph: dict[str, tuple[str, ...]]) -> list[str] | None:
    """A path start → … → start through `supersedes`, if there is one."""
    stack: list[tuple[str, list[str]]] = [(n, [start, n]) for n in graph.get(start, ())]
    seen: set[str] = set()
    while stack:
        current, path = stack.pop()
        if current == start:
            return path
        if current in seen:
            continue
        seen.add(current)
        stack.extend((n, [*path, n]) for n in graph.get(current, ()))
    return None
