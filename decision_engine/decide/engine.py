"""decide(): eligibility, routing, arbitration and scripts for one interaction. Pure."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from decision_engine.decide.contact import Blocked, blocked_offers
from decision_engine.decide.facts import typed_facts
from decision_engine.decide.learning import Draws, Learned, Plan
from decision_engine.decide.values import (
    Context,
    CustomerState,
    Decision,
    Explanation,
    RankedOffer,
    Routing,
)
from decision_engine.ruleset.compiled import CompiledOffer, CompiledRuleset, OfferGroup
from decision_engine.ruleset.runtime import first_failure, set_bits
from decision_engine.ruleset.spec import OfferSpec


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a decision takes from the customer and the context alone, before caps and
    contact policies: the same however often one interaction is decided (cap retries)."""

    facts: dict[str, Any]
    """Never written to once prepared, so decisions can share it."""
    unparsed: tuple[str, ...]
    routing: Routing
    first: dict[str, int]
    """Category -> tier of the first applicable policy (in precedence order) that puts it
    first."""
    suppress: dict[str, str]
    """Category -> the first applicable policy (in precedence order) that suppresses it."""
    candidates: int
    """The offers whose indexed conditions the facts meet (a bit per offer)."""


def prepare(
    ruleset: CompiledRuleset,
    *,
    state: CustomerState | None,
    context: Context,
    now: float,
    interaction_id: str = "",
) -> Prepared:
    """Pure: the facts, routing, applicable policies and candidate offers."""
    facts, unparsed = typed_facts(ruleset, state, context, now=now, interaction_id=interaction_id)
    routing = _route(ruleset, facts)
    # A category's tier is the position of the first applicable policy that puts it
    # first. Policies are held in precedence order (lowest first, ties in file order),
    # so the winning policy's categories rank first (security before retention on a
    # stolen-card cancel); suppression is the union over every policy that holds.
    first: dict[str, int] = {}
    suppress: dict[str, str] = {}
    for tier, policy in enumerate(ruleset.policies):
        if policy.test(facts) is True:
            for category in policy.first:
                first.setdefault(category, tier)
            for category in policy.suppress:
                suppress.setdefault(category, policy.spec.id)
    candidates = ruleset.offer_index.candidates(facts)
    return Prepared(facts, unparsed, routing, first, suppress, candidates)


def decide(
    ruleset: CompiledRuleset,
    *,
    state: CustomerState | None,
    context: Context,
    now: float,
    decision_id: str,
    interaction_id: str = "",
    max_offers: int = 0,
    explain: bool = False,
    degraded: bool = False,
    exhausted: frozenset[str] = frozenset(),
    customer_spent: frozenset[str] = frozenset(),
    learned: Learned | None = None,
    sample_seed: int | None = None,
    prepared: Prepared | None = None,
) -> Decision:
    """Pure: same inputs, same decision. `state` None means the store could not be read.

    `exhausted` lists capped offers whose budget for the day is spent, `customer_spent`
    those this customer has had their daily share of. With `learned`,
    propensities are the posterior means, or draws from the posteriors (Thompson
    sampling, seeded by `sample_seed`) when exploring. `prepared`, from `prepare` with
    the same ruleset, state, context, now and interaction id, saves computing it again
    when one interaction is decided more than once; the decision is the same.
    """
    if prepared is None:
        prepared = prepare(
            ruleset, state=state, context=context, now=now, interaction_id=interaction_id
        )
    facts, routing = prepared.facts, prepared.routing
    first, suppress, candidates = prepared.first, prepared.suppress, prepared.candidates
    blocked, presented_here = blocked_offers(
        ruleset,
        state.history if state is not None else {},
        now=now,
        interaction_id=interaction_id,
        exhausted=exhausted,
        customer_spent=customer_spent,
    )
    limit = _limit(ruleset, max_offers, context.channel, presented_here)
    blocked_mask = blocked.mask
    propensity, plan = _propensities(ruleset, learned, facts, sample_seed)
    ranked = (
        _ranked(
            ruleset, facts, limit, first, suppress, candidates & ~blocked_mask, propensity, plan
        )
        if limit
        else []
    )
    top = heapq.nsmallest(limit, ranked)
    offers = tuple(
        _present(
            ruleset.offers[i],
            facts,
            -neg_score,
            value,
            p,
            weights_applied,
            _promoter(ruleset, tier),
        )
        for tier, neg_score, _, i, value, p, weights_applied in top
    )
    explanations = (
        _explain(ruleset, facts, suppress, blocked, routing, propensity) if explain else ()
    )
    suppressed_by: tuple[str, ...] = ()
    if blocked_mask:
        # Only the policies that kept out an offer this customer was a candidate for.
        kept_out = candidates & blocked_mask
        suppressed_by = tuple(
            sorted({_kept_out(blocked, ruleset.offers[i].spec.id)[0] for i in set_bits(kept_out)})
        )
    return Decision(
        decision_id=decision_id,
        offers=offers,
        routing=routing,
        ruleset_version=ruleset.version,
        profile_found=bool(facts["profile_found"]),
        degraded=degraded,
        explanations=explanations,
        suppressed_by=suppressed_by,
        unparsed_fields=prepared.unparsed,
    )


def _kept_out(blocked: Blocked, offer_id: str) -> tuple[str, str]:
    """(policy or cap id, why) for an offer whose bit is in `blocked.mask`."""
    found = blocked.why(offer_id)
    assert found is not None, offer_id
    return found


def _limit(ruleset: CompiledRuleset, max_offers: int, channel: str, presented_here: int) -> int:
    """Offers this decision may return: the request, the channel and the interaction cap it."""
    source = ruleset.source
    limit = max_offers or source.max_offers
    channel_limit = source.channel_limits.get(channel)
    if channel_limit is not None:
        limit = min(limit, channel_limit)
    if source.max_offers_per_interaction is not None:
        limit = min(limit, max(source.max_offers_per_interaction - presented_here, 0))
    return limit


Ranked = tuple[int, float, str, int, float, float, tuple[str, ...]]
"""(tier, -score, offer id, offer bit, value, propensity, weights applied): sorts best
first, ids are unique. A plain tuple, not a NamedTuple: one is built per scored offer and
a NamedTuple costs ten times as much to build (415 vs 37 ns); `decide` unpacks it by name."""
Propensity = Callable[[OfferSpec], float]


def _propensities(
    ruleset: CompiledRuleset,
    learned: Learned | None,
    facts: dict[str, Any],
    sample_seed: int | None,
) -> tuple[Propensity | None, Plan | None]:
    """The propensity of each offer for this request, and the order to visit offers
    in with their bounds (None: the rule files' propensities, in bit order)."""
    if learned is None:
        return None, None
    segment = facts.get(learned.by) if learned.by else None
    plan = learned.plan(ruleset, segment, exploring=sample_seed is not None)
    if sample_seed is None:

        def mean(spec: OfferSpec) -> float:
            posterior = learned.posterior(spec.id, segment)
            return spec.propensity if posterior is None else posterior.mean

        return mean, plan
    rng = Draws(sample_seed)
    drawn: dict[str, float] = {}

    def sample(spec: OfferSpec) -> float:
        if spec.id not in drawn:
            posterior = learned.posterior(spec.id, segment)
            drawn[spec.id] = spec.propensity if posterior is None else posterior.sample(rng)
        return drawn[spec.id]

    return sample, plan


def _ranked(
    ruleset: CompiledRuleset,
    facts: dict[str, Any],
    limit: int,
    first: dict[str, int],
    suppress: dict[str, str],
    candidates: int,
    propensity: Propensity | None,
    plan: Plan | None,
) -> list[Ranked]:
    """The eligible offers that can still make the top `limit`, scored.

    This is the hot loop of a decision, so it avoids scoring what cannot win:
    promoted categories are visited tier by tier before the rest, and within a
    value group offers come in descending score bound, so once `limit` offers are
    kept a group stops at the first offer whose bound cannot beat the weakest. Groups
    are visited best bound x base first, and a group whose best bound cannot beat the
    weakest is skipped whole (with learned propensities it would be sorted first).
    """
    masks = ruleset.category_masks
    for category in suppress:
        candidates &= ~masks.get(category, 0)
    last_tier = len(ruleset.policies)
    passes: list[tuple[int, int]] = []
    for category, tier in sorted(first.items(), key=lambda item: item[1]):
        promoted = candidates & masks.get(category, 0)
        if promoted:
            passes.append((tier, promoted))
            candidates &= ~promoted
    passes.append((last_tier, candidates))

    ranked: list[Ranked] = []
    kept: list[tuple[int, float]] = []  # min-heap of (-tier, score): the weakest kept first
    offers, residuals = ruleset.offers, ruleset.offer_index.residuals
    static = ruleset.offer_bounds
    bases: dict[int, float | None] = {}
    for tier, pass_mask in passes:
        if len(kept) >= limit and -tier < kept[0][0]:
            break  # every offer kept ranks in a better tier than this pass and the next
        for g, group, mask, base, top in _groups_best_first(ruleset, facts, pass_mask, bases, plan):
            prune = group.prunable and base >= 0
            if prune and len(kept) >= limit and (-tier, top * base) < kept[0]:
                continue  # no offer of the group can beat the weakest kept
            visits: Iterable[int] = set_bits(mask, group.start)
            bounds = static if plan is None else plan.bounds
            if plan is not None and prune:
                # Learned propensities reorder the offers: visit them by bound instead.
                if mask.bit_count() <= _SORT_AT_MOST:
                    visits = sorted(visits, key=bounds.__getitem__, reverse=True)
                else:

                    def stop_below(tier: int = tier, base: float = base) -> float:
                        """The bound per unit of base an offer needs to still be kept."""
                        if len(kept) < limit or base <= 0:
                            return -math.inf
                        weakest_tier, weakest = kept[0]
                        if -tier < weakest_tier:
                            return math.inf  # this pass's tier ranks below every offer kept
                        return weakest / base if -tier == weakest_tier else -math.inf

                    visits = _in_bound_order(plan.order[g], mask, group.start, stop_below)
            for i in visits:
                if prune and len(kept) >= limit and (-tier, bounds[i] * base) < kept[0]:
                    break
                offer = offers[i]
                residual = residuals[i]
                if residual is not None and residual(facts) is not True:
                    continue
                value = offer.scale * base
                if propensity is None:
                    p = offer.spec.propensity
                    score = offer.factor * value
                else:
                    p = propensity(offer.spec)
                    score = p * offer.spec.lever * value
                applied: tuple[str, ...] = ()
                if offer.weights:
                    weight, applied = _weighting(offer, facts)
                    score *= weight
                ranked.append((tier, -score, offer.spec.id, i, value, p, applied))
                if len(kept) < limit:
                    heapq.heappush(kept, (-tier, score))
                elif (-tier, score) > kept[0]:
                    heapq.heapreplace(kept, (-tier, score))
    return ranked


def _groups_best_first(
    ruleset: CompiledRuleset,
    facts: dict[str, Any],
    pass_mask: int,
    bases: dict[int, float | None],
    plan: Plan | None,
) -> list[tuple[int, OfferGroup, int, float, float]]:
    """The groups with candidates in this pass and a known base, as (position, group,
    candidates, base, best bound), highest best bound x base first: the strongest
    offers are kept early, so the weaker groups are skipped whole."""
    out = []
    for g, group in enumerate(ruleset.offer_groups):
        mask = pass_mask & group.mask
        if not mask:
            continue
        if g not in bases:
            bases[g] = 1.0 if group.base is None else group.base(facts)
        base = bases[g]
        if base is None:
            continue  # the value is unknown for this customer
        top = ruleset.offer_bounds[group.start] if plan is None else plan.order[g][0][1]
        out.append((g, group, mask, base, top))
    out.sort(key=lambda item: item[4] * item[3], reverse=True)
    return out


_SORT_AT_MOST = 64
"""With learned propensities, a group of at most this many candidates has them sorted
by bound; past it, walking the group's offers in bound order (skipping the others) is
cheaper."""


def _in_bound_order(
    order: tuple[tuple[int, float], ...],
    mask: int,
    start: int,
    stop_below: Callable[[], float],
) -> Iterator[int]:
    """The candidates of `mask` in `order`, until a bound falls below `stop_below()`
    (asked again after each candidate: the caller keeps more as it scores them). It is
    checked at every offer, candidate or not, so the walk ends where the bounds do."""
    window = bin(mask >> start)[:1:-1]  # character j is bit start + j
    width = len(window)
    floor = stop_below()
    for i, bound in order:
        if bound < floor:
            return
        j = i - start
        if j < width and window[j] == "1":
            yield i
            floor = stop_below()


def _promoter(ruleset: CompiledRuleset, tier: int) -> str:
    """The policy that placed an offer's category first ("" when none did)."""
    return ruleset.policies[tier].spec.id if tier < len(ruleset.policies) else ""


def _route(ruleset: CompiledRuleset, facts: dict[str, Any]) -> Routing:
    for i in ruleset.route_index.matches(facts):
        rule = ruleset.routes[i]
        return Routing(rule.queue, rule.priority, rule.reason, rule.id, rule.skip_ivr)
    default = ruleset.source.default_route
    return Routing(default.queue, default.priority, default.reason, "default")


def _weighting(offer: CompiledOffer, facts: dict[str, Any]) -> tuple[float, tuple[str, ...]]:
    """The product of the context weights that apply, and each as a reason."""
    weight = 1.0
    applied: list[str] = []
    for test, factor, reason in offer.weights:
        if test(facts) is True:
            weight *= factor
            applied.append(reason)
    return weight, tuple(applied)


def _present(
    offer: CompiledOffer,
    facts: dict[str, Any],
    score: float,
    value: float,
    propensity: float,
    weights_applied: tuple[str, ...],
    promoted_by: str,
) -> RankedOffer:
    spec = offer.spec
    # Params shadow nothing (the loader forbids it), so a small dict beside facts is enough.
    params = {}
    for name, fn in offer.params:
        result = fn(facts)
        if result is not None:
            params[name] = result
    reasons = [f"eligible: {offer.eligibility}", *weights_applied]
    if promoted_by:
        reasons.append(f"{spec.category} first: policy {promoted_by}")
    script = offer.script(facts, params)
    return RankedOffer(
        offer_id=spec.id,
        title=spec.title,
        script=script,
        category=spec.category,
        score=score,
        expected_value=propensity * (value - spec.cost),
        propensity=propensity,
        value=value,
        rule_ids=(spec.id, promoted_by) if promoted_by else (spec.id,),
        reasons=tuple(reasons),
    )


def _explain(
    ruleset: CompiledRuleset,
    facts: dict[str, Any],
    suppress: dict[str, str],
    blocked: Blocked,
    routing: Routing,
    propensity: Propensity | None,
) -> tuple[Explanation, ...]:
    out: list[Explanation] = []
    for policy in ruleset.policies:
        failure = first_failure(policy.checks, facts)
        out.append(Explanation("policy", policy.spec.id, failure is None, failure or "applies"))
    route_failures = ruleset.route_index.failures(facts)
    for rule_id, failure in zip(ruleset.route_ids, route_failures, strict=True):
        if failure is not None:
            out.append(Explanation("routing", rule_id, False, failure))
        else:
            chosen = rule_id == routing.rule_id
            detail = "chosen" if chosen else "applies, but a rule of lower precedence won"
            out.append(Explanation("routing", rule_id, True, detail))
    offers, order = ruleset.offers, ruleset.file_order
    failures = ruleset.offer_index.failures(facts)  # in file order
    for k, (offer_id, failure) in enumerate(zip(ruleset.written_ids, failures, strict=True)):
        if failure is not None:
            out.append(Explanation("offer", offer_id, False, failure))
        else:
            i = order[k]
            out.append(_applicable(offers[i], i, facts, suppress, blocked, propensity))
    return tuple(out)


def _applicable(
    offer: CompiledOffer,
    bit: int,
    facts: dict[str, Any],
    suppress: dict[str, str],
    blocked: Blocked,
    propensity: Propensity | None,
) -> Explanation:
    """An offer whose terms hold: suppressed, kept out, unknown value, or its score."""
    spec = offer.spec
    if suppress and spec.category in suppress:
        why = f"suppressed by policy {suppress[spec.category]} ({spec.category})"
        return Explanation("offer", spec.id, False, why)
    if blocked.mask >> bit & 1:
        policy_id, why = _kept_out(blocked, spec.id)
        return Explanation(
            "offer", spec.id, False, f"suppressed by contact policy {policy_id}: {why}"
        )
    p = spec.propensity if propensity is None else propensity(spec)
    value = offer.value(facts)
    if value is None:
        why = f"value {spec.value.text} is unknown for this customer"
        return Explanation("offer", spec.id, False, why)
    weight = _weighting(offer, facts)[0] if offer.weights else 1.0
    lever = spec.lever
    detail = _SCORED(p * lever * value * weight, p, value, weight, lever)
    return Explanation("offer", spec.id, True, detail)


# One str.format call: compiled (build_core.py), an f-string's every formatted field
# becomes a str.format call of its own, and these five cost more than the decision.
_SCORED = "score {:,.2f} = propensity {:.3g} x value {:,.2f} x weight {:g} x lever {:g}".format
