"""The offers section: each offer, its script, and the contact policies about offers."""

from __future__ import annotations

import yaml

from decision_engine.ruleset.rule_nodes import RuleNodes
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.spec import Condition, ContactPolicy, Limit, OfferSpec, Weight
from decision_engine.ruleset.template import Template
from decision_engine.ruleset.typecheck import did_you_mean
from decision_engine.vocabulary import CHANNELS, id_problem


def offer(
    r: RuleNodes,
    node: yaml.Node,
    fields: dict[str, FieldSpec],
    contact_policies: list[ContactPolicy],
    *,
    currency: str = "",
) -> OfferSpec | None:
    """An offer; its own contact policy, if it has one, is appended to `contact_policies`."""
    keys = (
        "id", "title", "category", "script", "value", "cost", "propensity", "lever",
        "channels", "when", "weights", "params", "description", "contact_policy",
        "daily_cap", "daily_cap_per_customer",
    )  # fmt: skip
    if not isinstance(node, yaml.MappingNode):
        r.error(node, "an offer must be a mapping (id, title, when, value, script, ...)")
        return None
    spec = r.mapping(node, "offer", keys)
    if "id" not in spec:
        r.error(node, "offer has no id")
        return None
    offer_id = r.text(spec["id"], "offer id")
    problem = id_problem(offer_id) if offer_id else None
    if problem is not None:
        # Outcomes name the offer, and RecordOutcome refuses ids outside this alphabet.
        r.error(spec["id"], f"offer id {offer_id!r}: {problem}")
    # An absent key means every channel; an explicit `channels: []` means none
    # (rules check warns about it), so it is not widened to all channels.
    channels = r.names(spec["channels"], "channels") if "channels" in spec else CHANNELS
    for ch_node, ch in zip(items_of(spec.get("channels")), channels, strict=False):
        if ch not in CHANNELS:
            r.error(
                ch_node,
                f"offer {offer_id}: unknown channel {ch!r}{did_you_mean(ch, list(CHANNELS))}",
            )
    params: list[tuple[str, Condition]] = []
    # A param whose expression is wrong is still declared: the script may name it.
    declared = r.mapping(spec.get("params"), "params")
    for pname, pnode in declared.items():
        if pname in fields:
            r.error(pnode, f"param {pname!r} hides the field of the same name")
        cond = r.expression(pnode, f"offer {offer_id} param {pname}", fields, want="number")
        if cond is not None:
            params.append((pname, cond))
    value_node = spec.get("value")
    value = (
        r.expression(value_node, f"offer {offer_id} value", fields, want="number")
        if value_node
        else None
    )
    if value_node is None:
        r.error(node, f"offer {offer_id} has no value")
    weights = []
    for wnode in r.sequence(spec.get("weights"), "weights"):
        w = r.mapping(wnode, "weight", ("when", "factor"))
        conds = r.conditions(w.get("when"), f"offer {offer_id} weight", fields)
        factor = r.number(w.get("factor"), "weight factor", 1.0, 0, 1000)
        if "when" not in w or "factor" not in w:
            r.error(wnode, "a weight has `when` and `factor`")
        for cond in conds:
            weights.append(Weight(cond, factor))
    script = _script(r, node, spec.get("script"), offer_id, fields, set(declared), currency)
    # Everything is checked before giving up, so one run reports every problem.
    cost = r.number(spec.get("cost"), "cost", 0.0, 0)
    propensity = r.number(spec.get("propensity"), "propensity", 0.1, 0, 1)
    lever = r.number(spec.get("lever"), "lever", 1.0, 0, 1000)
    when = r.conditions(spec.get("when"), f"offer {offer_id}", fields)
    daily_cap = (
        r.integer(spec["daily_cap"], "daily_cap", 0, 1, 1_000_000_000)
        if "daily_cap" in spec
        else None
    )
    per_customer = None
    if "daily_cap_per_customer" in spec:
        node_per = spec["daily_cap_per_customer"]
        per_customer = r.integer(
            node_per, "daily_cap_per_customer", 1, 1, daily_cap or 1_000_000_000
        )
        if daily_cap is None:
            r.error(node_per, f"offer {offer_id}: daily_cap_per_customer needs a daily_cap")
    elif daily_cap is not None:
        per_customer = 1  # the cap counts customers, unless the file says otherwise
    if "contact_policy" in spec:
        policy = contact_policy(
            r, spec["contact_policy"], f"{offer_id}/contact-policy", (offer_id,), ()
        )
        if policy is not None:
            contact_policies.append(policy)
    if value is None or script is None:
        return None
    return OfferSpec(
        id=offer_id,
        title=r.text(spec.get("title"), "title", offer_id),
        category=r.text(spec.get("category"), "category", "general"),
        script=script,
        value=value,
        cost=cost,
        propensity=propensity,
        lever=lever,
        channels=channels,
        when=when,
        weights=tuple(weights),
        params=tuple(params),
        where=r.where(node),
        daily_cap=daily_cap,
        daily_cap_per_customer=per_customer if daily_cap is not None else None,
    )


POLICY_KEYS = (
    "suppress_after_decline_days", "max_declines", "max_presentations", "max_acceptances",
)  # fmt: skip


def contact_policy(
    r: RuleNodes,
    node: yaml.Node,
    policy_id: str,
    offers: tuple[str, ...],
    categories: tuple[str, ...],
    extra_keys: tuple[str, ...] = (),
) -> ContactPolicy | None:
    spec = r.mapping(node, "contact policy", POLICY_KEYS + extra_keys)
    if not any(key in spec for key in POLICY_KEYS):
        r.error(node, f"contact policy {policy_id} sets none of {', '.join(POLICY_KEYS)}")
        return None
    days = spec.get("suppress_after_decline_days")
    return ContactPolicy(
        id=policy_id,
        offers=offers,
        categories=categories,
        suppress_after_decline_days=(
            None if days is None else r.number(days, "suppress_after_decline_days", 0, 0, 3650)
        ),
        max_declines=_limit(r, spec.get("max_declines"), "max_declines"),
        max_presentations=_limit(r, spec.get("max_presentations"), "max_presentations"),
        max_acceptances=_limit(r, spec.get("max_acceptances"), "max_acceptances"),
        where=r.where(node),
    )


def _limit(r: RuleNodes, node: yaml.Node | None, what: str) -> Limit | None:
    if node is None:
        return None
    spec = r.mapping(node, what, ("count", "within_days"))
    if "count" not in spec or "within_days" not in spec:
        r.error(node, f"{what} needs count and within_days, e.g. {{count: 2, within_days: 30}}")
        return None
    return Limit(
        r.integer(spec["count"], f"{what} count", 1, 1, 1_000_000),
        r.number(spec["within_days"], f"{what} within_days", 1, 0.001, 3650),
    )


def _script(
    r: RuleNodes,
    offer: yaml.Node,
    node: yaml.Node | None,
    offer_id: str,
    fields: dict[str, FieldSpec],
    params: set[str],
    currency: str,
) -> Template | None:
    if node is None:
        r.error(offer, f"offer {offer_id} has no script")
        return None
    # A script sees the offer's params as computed numbers, beside the fields.
    known = {**fields, **{p: FieldSpec(p, "number", source="param") for p in sorted(params)}}
    return r.template(node, f"offer {offer_id} script", known, currency=currency)


def category_policy(r: RuleNodes, node: yaml.Node, categories: set[str]) -> ContactPolicy | None:
    if not isinstance(node, yaml.MappingNode):
        r.error(node, "a contact policy is a mapping with an id and categories")
        return None
    spec = r.mapping(node, "contact policy", ("id", "categories", "description", *POLICY_KEYS))
    if "id" not in spec or "categories" not in spec:
        r.error(node, "a contact policy has an id and categories")
        return None
    policy_id = r.text(spec["id"], "contact policy id")
    named = r.names(spec["categories"], "categories")
    for category in named:
        if category not in categories:
            r.error(
                spec["categories"],
                f"contact policy {policy_id}: no offer has category {category!r}"
                + did_you_mean(category, sorted(categories)),
            )
    return contact_policy(
        r, node, policy_id, (), named, extra_keys=("id", "categories", "description")
    )


def declared_category(node: yaml.Node) -> str:
    """The category an offer node names, whether or not the offer itself is valid, so that
    a broken offer does not also make every policy about its category an error."""
    return RuleNodes.top_scalar(node, "category") or "general"


def declared_id(node: yaml.Node) -> str:
    """The id an offer node names ("" when it names none), valid or not."""
    return RuleNodes.top_scalar(node, "id") or ""


def items_of(node: yaml.Node | None) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return [node] if node is not None else []
