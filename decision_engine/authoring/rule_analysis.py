"""The warnings of `rules check`: rules that can never do what they say.

The warnings come from reasoning about the top-level `and` terms of each condition,
one field at a time (numeric intervals, sets of values, presence). A term the
index cannot decide (`or`, arithmetic, functions) is unknown, and an unknown term
never produces a warning: everything reported here is provably true, so a
business user can act on it without second-guessing the tool.

Notices get the same reasoning: a notice whose `when` cannot hold, or whose `when`
rules out the consent (or requires the opt-out) of every channel it may use, can never
be sent; an event type no notice reacts to sends nothing.

Shadowing looks further: each condition is also read as an `or` of `and`s of field
terms (negations pushed down to the terms, which three-valued logic allows), so an
earlier rule written with `or`, `in` or `not` can still be shown to hold whenever a
later one does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from itertools import combinations

from decision_engine.authoring.domains import (
    ANY,
    Atom,
    Domain,
    Scalar,
    atom_of,
    domain_of,
    is_empty,
    negate,
)
from decision_engine.errors import Problem, Where
from decision_engine.ruleset.expr import Logic, Node, Not, conjuncts, parse, render
from decision_engine.ruleset.notice_section import notice_fields
from decision_engine.ruleset.rule_index import index_term
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.spec import (
    Condition,
    NoticeChannel,
    NoticeRules,
    NoticeSpec,
    OfferSpec,
    PolicySpec,
    RouteSpec,
    Ruleset,
)
from decision_engine.store.outcomes import HISTORY_DAYS
from decision_engine.vocabulary import CHANNELS

# -- rules as sets of terms ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Term:
    field: str
    atom: Atom
    text: str


@dataclass(frozen=True, slots=True)
class _CheckedRule:
    """One offer, routing rule or policy, reduced to what we can reason about."""

    what: str
    """"offer x", "routing rule y", "policy z": how messages name it."""
    verb: str
    where: Where
    terms: tuple[_Term, ...]
    unknown: frozenset[object]
    """Shapes of the terms we cannot reason about (`or`, arithmetic, functions)."""
    domains: Mapping[str, Domain] = field(default_factory=dict)
    cases: tuple[_Conjunction, ...] | None = None
    """The condition as an `or` of these (None: read only its top-level terms)."""

    @property
    def no_conditions(self) -> bool:
        return not self.terms and not self.unknown


@dataclass(frozen=True, slots=True)
class _Conjunction:
    """Field terms and unknown terms (by shape) that must all hold."""

    atoms: tuple[Atom, ...]
    unknown: frozenset[object]
    domains: Mapping[str, Domain] = field(default_factory=dict)


_MAX_CASES = 64
"""More `or` cases than this in one (sub)condition and it is read as an unknown term."""
_MAX_SPLITS = 512
"""How many value-by-value case splits one implication check may make."""


def _rule(what: str, verb: str, where: Where, conditions: Sequence[Condition]) -> _CheckedRule:
    terms, unknown = [], set()
    for term in (t for cond in conditions for t in conjuncts(cond.node)):
        atom = atom_of(term)
        if atom is None:
            unknown.add(_shape(term))
        else:
            terms.append(_Term(atom[0][0], atom, render(term)))
    cases = _cross([_cases(cond.node, positive=True) for cond in conditions])
    rule = _CheckedRule(what, verb, where, tuple(terms), frozenset(unknown))
    return _with_domains(replace(rule, cases=None if cases is None else _with_meets(cases)))


def _with_meets(cases: Sequence[_Conjunction]) -> tuple[_Conjunction, ...]:
    out = []
    for case in cases:
        domains: dict[str, Domain] = {}
        for atom in case.atoms:
            name = atom[0][0]
            domains[name] = domains.get(name, ANY).meet(domain_of(atom))
        out.append(replace(case, domains=domains))
    return tuple(out)


def _cases(node: Node, *, positive: bool) -> list[_Conjunction]:
    """When `node` is True (`positive`) or False: an `or` of conjunctions.

    Three-valued logic keeps De Morgan: `a and b` is False exactly when a or b is
    False, `not a` is True exactly when a is False; a field term is False exactly when
    its negation (which still needs a value) is True.
    """
    if isinstance(node, Not):
        return _cases(node.operand, positive=not positive)
    if isinstance(node, Logic):
        parts = [_cases(o, positive=positive) for o in node.operands]
        if (node.op == "and") == positive:
            crossed = _cross(parts)
        else:
            crossed = [c for part in parts for c in part]
            crossed = crossed if len(crossed) <= _MAX_CASES else None
        if crossed is not None:
            return crossed
    else:
        atom = index_term(node)
        if atom is not None:
            return [_Conjunction((atom if positive else negate(atom),), frozenset())]
    shape = _shape(node if positive else Not(node, 0))
    return [_Conjunction((), frozenset({shape}))]


def _cross(parts: Sequence[Sequence[_Conjunction]]) -> list[_Conjunction] | None:
    """The `and` of `or`s as one `or` (None when it has too many cases)."""
    out = [_Conjunction((), frozenset())]
    for part in parts:
        out = [_Conjunction((*a.atoms, *b.atoms), a.unknown | b.unknown) for a in out for b in part]
        if len(out) > _MAX_CASES:
            return None
    return out


def _with_domains(rule: _CheckedRule) -> _CheckedRule:
    domains: dict[str, Domain] = {}
    for term in rule.terms:
        domains[term.field] = domains.get(term.field, ANY).meet(domain_of(term.atom))
    return replace(rule, domains=domains)


def _shape(node: object) -> object:
    """A node without its columns, so that the same term written twice compares equal."""
    if isinstance(node, tuple):
        return tuple(_shape(n) for n in node)
    if is_dataclass(node) and not isinstance(node, type):
        parts = (_shape(getattr(node, f.name)) for f in fields(node) if f.name != "col")
        return (type(node).__name__, *parts)
    # The type keeps `true` apart from `1`, which Python considers equal.
    return (type(node).__name__, node)


def _offer_rule(offer: OfferSpec) -> _CheckedRule:
    rule = _rule(f"offer {offer.id}", "be eligible", offer.where, offer.when)
    if not offer.channels or set(offer.channels) >= set(CHANNELS):
        return rule
    # The channels list is one more condition on `channel`, as the index treats it.
    channels = _Term(
        "channel",
        (("channel", "cat"), (frozenset(offer.channels), False)),
        f"channels: [{', '.join(offer.channels)}]",
    )
    return _with_domains(replace(rule, terms=(*rule.terms, channels)))


# -- the warnings -------------------------------------------------------------------------


def analyse(ruleset: Ruleset) -> list[Problem]:
    """Warnings about a loaded ruleset (see the module docstring for how sure they are)."""
    specs = ruleset.fields
    offers = [_offer_rule(o) for o in ruleset.offers]
    routes = [_rule(f"routing rule {r.id}", "apply", r.where, r.when) for r in ruleset.routes]
    policies = [_rule(f"policy {p.id}", "apply", p.where, p.when) for p in ruleset.policies]
    problems: list[Problem] = []
    impossible: set[str] = set()
    for rule in (*offers, *routes, *policies):
        message = _contradiction(rule, specs)
        if message is not None:
            impossible.add(rule.what)
            problems.append(_warning(rule.where, message))
    problems += [_no_channel(o.id, o.where) for o in ruleset.offers if not o.channels]
    # A rule that can never hold neither wins nor overlaps: it is reported once, above.
    paired = zip(ruleset.routes, routes, strict=True)
    live = [(spec, rule) for spec, rule in paired if rule.what not in impossible]
    shadowed = _shadowed(live, specs)
    problems += shadowed.values()
    problems += _overlaps([(s, r) for s, r in live if r.what not in shadowed], specs)
    held = zip(ruleset.policies, policies, strict=True)
    problems += _policy_ties([(s, r) for s, r in held if r.what not in impossible], specs)
    problems += _uncovered_values(offers, specs)
    problems += _beyond_history(ruleset)
    if ruleset.notices is not None:
        problems += _notice_warnings(ruleset.notices, specs)
    return problems


def _warning(where: Where, message: str) -> Problem:
    return Problem(where, message, severity="warning")


def _contradiction(rule: _CheckedRule, specs: Mapping[str, FieldSpec]) -> str | None:
    """Why the rule's terms can never all hold, from the first field that shows it."""
    for name, domain in rule.domains.items():
        spec = specs[name]
        if not is_empty(domain, spec):
            continue
        texts = [f"`{t.text}`" for t in rule.terms if t.field == name]
        joined = _join(texts)
        quantity = "" if len(texts) == 1 else " both" if len(texts) == 2 else " all"
        reason = f"{joined} cannot{quantity} hold"
        if not is_empty(domain, spec, use_range=False):
            reason += f": {name} is declared {_range(spec)}"
        return f"{rule.what} can never {rule.verb}: {reason}; fix or remove the condition"
    return None


def _notice_warnings(rules: NoticeRules, all_specs: Mapping[str, FieldSpec]) -> list[Problem]:
    """Notices that can never be sent, and events that send nothing."""
    problems: list[Problem] = []
    for notice in rules.notices:
        specs = {**all_specs, **notice_fields(rules, notice.on, dict(all_specs))}
        rule = _rule(f"notice {notice.id}", "be sent", notice.where, notice.when)
        message = _contradiction(rule, specs)
        if message is None:
            message = _no_usable_channel(notice, rules, rule, specs)
        if message is not None:
            problems.append(_warning(notice.where, message))
    used = {n.on for n in rules.notices}
    for name, event in rules.events.items():
        if name not in used:
            problems.append(
                _warning(
                    event.where,
                    f"event type {name} has no notice on it: a {name} event sends nothing; "
                    f"add a notice rule with `on: {name}`, or remove the event type",
                )
            )
    return problems


def _no_usable_channel(
    notice: NoticeSpec, rules: NoticeRules, rule: _CheckedRule, specs: Mapping[str, FieldSpec]
) -> str | None:
    """Why no channel of the notice can be used whenever its `when` holds, or None."""
    reasons = [_refused(rules.channels[c], rule, specs) for c in notice.channels]
    if not reasons or any(r is None for r in reasons):
        return None
    return (
        f"notice {notice.id} can never be sent: whenever its conditions hold, "
        + _join([r for r in reasons if r is not None])
        + "; fix the condition or the channels"
    )


def _refused(
    channel: NoticeChannel, rule: _CheckedRule, specs: Mapping[str, FieldSpec]
) -> str | None:
    """Why the notice's conditions rule out a channel's consent (or opt-out), or None."""

    def excluded(name: str, term: str, absent: bool = False) -> bool:
        domain = rule.domains.get(name, ANY)
        atom = atom_of(parse(term))
        ruled_out = atom is not None and is_empty(domain.meet(domain_of(atom)), specs[name])
        if absent:
            ruled_out = ruled_out and is_empty(domain.meet(Domain(present=False)), specs[name])
        return ruled_out

    if channel.consent is not None and excluded(channel.consent, f"{channel.consent} == true"):
        return f"{channel.channel} has no consent ({channel.consent} is not true)"
    if channel.opt_out is not None and excluded(
        channel.opt_out, f"{channel.opt_out} == false", absent=True
    ):
        return f"{channel.channel} is opted out ({channel.opt_out} is true)"
    return None


def _no_channel(offer_id: str, where: Where) -> Problem:
    return _warning(
        where,
        f"offer {offer_id} is eligible on no channel (`channels: []`); list the channels "
        "it may be proposed on, or remove `channels` to allow every channel",
    )


def _shadowed(
    routes: Sequence[tuple[RouteSpec, _CheckedRule]], specs: Mapping[str, FieldSpec]
) -> dict[str, Problem]:
    """Routing rules that never win: an earlier rule holds whenever they do."""
    found: dict[str, Problem] = {}
    for i, (spec, rule) in enumerate(routes):
        for earlier_spec, earlier in routes[:i]:
            if _implies(rule, earlier, specs):
                found[rule.what] = _warning(
                    rule.where, _shadow_message(spec, earlier_spec, earlier)
                )
                break
    return found


def _shadow_message(spec: RouteSpec, earlier_spec: RouteSpec, earlier: _CheckedRule) -> str:
    if earlier_spec.precedence < spec.precedence:
        wins = f"its precedence {earlier_spec.precedence} is lower than {spec.precedence}"
    else:
        wins = f"it has the same precedence {spec.precedence} and comes first"
    holds = (
        "has no conditions, so it always applies"
        if earlier.no_conditions
        else f"also holds whenever {spec.id} does"
    )
    return (
        f"routing rule {spec.id} can never apply: routing rule {earlier_spec.id} "
        f"({earlier.where}) {holds}, and wins because {wins}; give {spec.id} a lower "
        f"precedence or narrow {earlier_spec.id}"
    )


def _implies(rule: _CheckedRule, other: _CheckedRule, specs: Mapping[str, FieldSpec]) -> bool:
    """Whenever `rule` holds, `other` holds too.

    Every case of `rule` must imply some case of `other`, or, split value by value on
    the enum and bool fields `other` names, each part must.
    """
    if _terms_follow(rule.domains, rule.unknown, other.terms, other.unknown, specs):
        return True
    if rule.cases is None or other.cases is None:
        return False
    budget = [_MAX_SPLITS]
    return all(_case_implies(c.domains, c.unknown, other.cases, specs, budget) for c in rule.cases)


def _terms_follow(
    domains: Mapping[str, Domain],
    unknown: frozenset[object],
    terms: Iterable[_Term],
    other_unknown: frozenset[object],
    specs: Mapping[str, FieldSpec],
) -> bool:
    if not other_unknown <= unknown:
        return False  # a term we cannot read follows only when written identically
    return all(_follows(domains.get(t.field, ANY), t.atom, specs[t.field]) for t in terms)


def _case_implies(
    domains: Mapping[str, Domain],
    unknown: frozenset[object],
    others: Sequence[_Conjunction],
    specs: Mapping[str, FieldSpec],
    budget: list[int],
) -> bool:
    if any(is_empty(d, specs[n]) for n, d in domains.items()):
        return True  # this case never holds
    for other in others:
        terms = (_Term(a[0][0], a, "") for a in other.atoms)
        if _terms_follow(domains, unknown, terms, other.unknown, specs):
            return True
    # Split on a field with finitely many values (and absence) that the cases name.
    names = sorted({a[0][0] for other in others for a in other.atoms})
    for name in names:
        parts = _split(domains.get(name, ANY), specs[name])
        if len(parts) < 2:
            continue
        budget[0] -= 1
        if budget[0] < 0:
            return False
        return all(
            _case_implies({**domains, name: part}, unknown, others, specs, budget) for part in parts
        )
    return False


def _split(domain: Domain, spec: FieldSpec) -> list[Domain]:
    """`domain` as the non-empty parts holding one value each, or absence (when finite)."""
    if domain.allowed is not None:
        values: Iterable[Scalar] = domain.allowed
    elif spec.kind == "enum":
        values = spec.values
    elif spec.kind == "bool":
        values = (True, False)
    else:
        return [domain]
    pieces = [Domain(present=True, allowed=frozenset({v})) for v in values]
    pieces.append(Domain(present=False))
    parts = [domain.meet(p) for p in pieces]
    return [p for p in parts if not is_empty(p, spec)]


def _follows(domain: Domain, atom: Atom, spec: FieldSpec) -> bool:
    """Every customer in `domain` makes `atom` true."""
    # A comparison is not true for an absent value, so it follows only when the
    # domain guarantees a value; `not exists(x)` needs none.
    if atom[0][1] != "exists-" and domain.present is not True:
        return False
    return is_empty(domain.meet(domain_of(negate(atom))), spec)


def _overlaps(
    routes: Sequence[tuple[RouteSpec, _CheckedRule]], specs: Mapping[str, FieldSpec]
) -> list[Problem]:
    """Rules of equal precedence that may both apply: only file order decides between them."""
    problems = []
    for (first_spec, first), (spec, rule) in combinations(routes, 2):
        if first_spec.precedence != spec.precedence or _disjoint(first, rule, specs):
            continue
        problems.append(
            _warning(
                rule.where,
                f"routing rules {first_spec.id} ({first.where}) and {spec.id} both have "
                f"precedence {spec.precedence} and can apply to the same interaction; "
                f"{first_spec.id} wins today only because it comes first; give them "
                "distinct precedences",
            )
        )
    return problems


def _policy_ties(
    policies: Sequence[tuple[PolicySpec, _CheckedRule]], specs: Mapping[str, FieldSpec]
) -> list[Problem]:
    """Policies of equal precedence that may both hold and whose `first` lists rank the
    categories differently depending on which goes first: only file order decides."""
    problems = []
    for (first_spec, first), (spec, rule) in combinations(policies, 2):
        if first_spec.precedence != spec.precedence or not (first_spec.first and spec.first):
            continue
        if _tiers(first_spec, spec) == _tiers(spec, first_spec) or _disjoint(first, rule, specs):
            continue
        problems.append(
            _warning(
                spec.where,
                f"policies {first_spec.id} ({first.where}) and {spec.id} both have "
                f"precedence {spec.precedence}, can hold for the same interaction and put "
                f"different categories first; {first_spec.id} wins today only because it "
                "comes first; give them distinct precedences",
            )
        )
    return problems


def _tiers(a: PolicySpec, b: PolicySpec) -> list[frozenset[str]]:
    """The categories promoted per tier when both hold and `a` wins: each category in the
    first tier that names it; a suppressed category in none (suppression beats first)."""
    out = frozenset(a.suppress) | frozenset(b.suppress)
    tier_a = frozenset(a.first) - out
    tiers = [tier_a, frozenset(b.first) - tier_a - out]
    return [tier for tier in tiers if tier]


def _beyond_history(ruleset: Ruleset) -> list[Problem]:
    """Contact policy windows longer than the offer history the store keeps: outcomes
    older than HISTORY_DAYS are gone, so the policy sees fewer than it asks about."""
    problems = []
    for policy in ruleset.contact_policies:
        windows = [("suppress_after_decline_days", policy.suppress_after_decline_days)]
        windows += [
            (name, limit.days)
            for name, limit in (
                ("max_declines", policy.max_declines),
                ("max_presentations", policy.max_presentations),
                ("max_acceptances", policy.max_acceptances),
            )
            if limit is not None
        ]
        for name, days in windows:
            if days is not None and days > HISTORY_DAYS:
                problems.append(
                    _warning(
                        policy.where,
                        f"contact policy {policy.id}: {name} looks back {days:g} days, but "
                        f"offer history is kept {HISTORY_DAYS} days; outcomes older than that "
                        f"are not counted; use at most {HISTORY_DAYS} days",
                    )
                )
    return problems


def _disjoint(a: _CheckedRule, b: _CheckedRule, specs: Mapping[str, FieldSpec]) -> bool:
    """No interaction satisfies both: some field has no value (or absence) they share."""
    shared = a.domains.keys() & b.domains.keys()
    return any(is_empty(a.domains[n].meet(b.domains[n]), specs[n]) for n in shared)


def _uncovered_values(
    offers: Sequence[_CheckedRule], specs: Mapping[str, FieldSpec]
) -> list[Problem]:
    """Per enum field some offer constrains: the values for which no offer can be eligible."""
    problems = []
    for name, spec in specs.items():
        if spec.kind != "enum" or spec.source not in ("profile", "attribute"):
            continue
        constraining = [o for o in offers if name in o.domains]
        if not constraining:
            continue
        missing = [v for v in spec.values if all(_excludes(o, name, v, spec) for o in offers)]
        if missing:
            shown = _join([f'"{v}"' for v in missing], "or")
            problems.append(
                _warning(
                    constraining[0].where,
                    f"no offer can ever be eligible when {name} is {shown}: every offer's "
                    f"conditions rule {'it' if len(missing) == 1 else 'them'} out; add an "
                    f"offer or widen a condition on {name}",
                )
            )
    return problems


def _excludes(offer: _CheckedRule, name: str, value: str, spec: FieldSpec) -> bool:
    domain = offer.domains.get(name)
    if domain is None:
        return False
    return is_empty(domain.meet(Domain(present=True, allowed=frozenset({value}))), spec)


def _join(items: Sequence[str], last: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def _range(spec: FieldSpec) -> str:
    low = "" if spec.minimum is None else f"{spec.minimum:g}"
    high = "" if spec.maximum is None else f"{spec.maximum:g}"
    if low and high:
        return f"between {low} and {high}"
    return f"at least {low}" if low else f"at most {high}"
