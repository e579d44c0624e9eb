"""Baseline vs candidate: what changes, customer by customer, when the new ruleset
replaces the one live today."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import chain

from decision_engine.authoring.results import (
    Diff,
    ListChange,
    OfferDelta,
    RuleDelta,
    Run,
    Transition,
)
from decision_engine.ruleset.compiled import CompiledRuleset

TOP_CHANGES = 10


def compare(
    old: Run,
    new: Run,
    customer_ids: Sequence[str],
    *,
    old_rules: CompiledRuleset,
    new_rules: CompiledRuleset,
) -> Diff:
    """Customer by customer: both runs are over the same population in the same order."""
    changed: list[str] = []
    transitions: Counter[tuple[str, str]] = Counter()
    lists: Counter[tuple[tuple[str, ...], tuple[str, ...]]] = Counter()
    gained: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    rows = zip(customer_ids, old.queues, new.queues, old.offer_ids, new.offer_ids, strict=True)
    for customer_id, q_old, q_new, ids_old, ids_new in rows:
        if q_old == q_new and ids_old == ids_new:
            continue
        changed.append(customer_id)
        if q_old != q_new:
            transitions[q_old, q_new] += 1
        if ids_old != ids_new:
            lists[ids_old, ids_new] += 1
            gained.update(set(ids_new).difference(ids_old))
            lost.update(set(ids_old).difference(ids_new))
    return Diff(
        changed_customers=tuple(changed),
        routing_changed=transitions.total(),
        offers_changed=lists.total(),
        transitions=tuple(
            Transition(a, b, n)
            for (a, b), n in sorted(transitions.items(), key=lambda kv: (-kv[1], kv[0]))
        ),
        offers=_offer_deltas(old, new, gained, lost, _titles(old_rules, new_rules)),
        top_changes=tuple(
            ListChange(a, b, n)
            for (a, b), n in sorted(lists.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CHANGES]
        ),
        routing_rules=_rule_deltas(old, new, old_rules, new_rules),
    )


def _titles(*rulesets: CompiledRuleset) -> dict[str, str]:
    return {o.spec.id: o.spec.title for r in rulesets for o in r.offers}


def _offer_deltas(
    old: Run, new: Run, gained: Counter[str], lost: Counter[str], titles: Mapping[str, str]
) -> tuple[OfferDelta, ...]:
    before = Counter(chain.from_iterable(old.offer_ids))
    after = Counter(chain.from_iterable(new.offer_ids))
    deltas = [
        OfferDelta(o, titles.get(o, ""), before[o], after[o], gained[o], lost[o])
        for o in before.keys() | after.keys()
    ]
    deltas.sort(key=lambda d: (-(d.gained + d.lost), -abs(d.new - d.baseline), d.offer_id))
    return tuple(deltas)


def _rule_deltas(
    old: Run, new: Run, old_rules: CompiledRuleset, new_rules: CompiledRuleset
) -> tuple[RuleDelta, ...]:
    before, after = Counter(old.rule_ids), Counter(new.rule_ids)
    # New ruleset's order first, then rules the new one dropped; default last.
    ids = [r.id for r in new_rules.routes]
    known = set(ids)
    ids += [r.id for r in old_rules.routes if r.id not in known]
    ids.append("default")
    return tuple(RuleDelta(r, before[r], after[r]) for r in ids)
