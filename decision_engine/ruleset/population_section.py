"""The `population:` of a schema field: how generated customers get it.

    vulnerable:  {type: bool, population: 0.08}                 # share true
    has_ev:      {type: bool, population: {share: 0.06, absent: 0.1}}
    tariff:      {type: enum, values: [fixed, green], population: {fixed: 70, green: 30}}
    clv:         {type: number, population: {median: 1800, spread: 2.2}}   # log-normal
    churn_risk:  {type: number, population: {mean: 0.2, sd: 0.1}}          # normal, clipped
    tenure:      {type: integer, population: {min: 0, max: 120}}           # uniform
    contract_end: {type: date, population: {from_days: -30, to_days: 540}}  # from today
    first_name:  {type: string, population: {absent: 0.2}}

    days_behind: {type: integer, population: {median: 40, spread: 2, present_with: arrears}}

`absent` (0–1, any kind) is the share of customers without the field; alone, the value is
drawn from the declaration as without a population. `present_with` (any kind, instead of
`absent`) names a field declared before it: the field is present exactly when that one is.
Every problem is located.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

import yaml

from decision_engine.ruleset.rule_nodes import RuleNodes
from decision_engine.ruleset.schema import FieldPopulation, FieldSpec

ABSENT = "absent"
PRESENT_WITH = "present_with"
_NUMBER_SHAPES = {
    "normal": ("mean", "sd"),
    "lognormal": ("median", "spread"),
    "uniform": ("min", "max"),
}
_ONE_SHAPE = "give one of {mean, sd}, {median, spread} or {min, max}"
_DATE_KEYS = ("from_days", "to_days")
_DATE_SPAN_DAYS = 36_500


def field_population(
    r: RuleNodes, spec: FieldSpec, node: yaml.Node, earlier: Collection[str]
) -> FieldPopulation | None:
    """The population a field declares, or None (with a located problem) when it is wrong;
    `earlier` are the fields declared before it, of the same source."""
    what = f"field {spec.name} population"
    if isinstance(node, yaml.MappingNode):
        keys = {str(k.value): v for k, v in node.value}
        if PRESENT_WITH in keys:
            other = r.text(keys[PRESENT_WITH], f"{what} present_with")
            if ABSENT in keys:
                r.error(keys[PRESENT_WITH], f"{what}: present_with or absent, not both")
                return None
            if other and other not in earlier:
                r.error(
                    keys[PRESENT_WITH],
                    f"{what}: present_with names a field declared before it, not {other!r}"
                    + (f" (declared before: {', '.join(earlier)})" if earlier else ""),
                )
                return None
            rest = yaml.MappingNode(
                node.tag,
                [(k, v) for k, v in node.value if str(k.value) != PRESENT_WITH],
                node.start_mark,
                node.end_mark,
            )
            population = _population(r, spec, rest)
            return replace(population, present_with=other) if population is not None else None
    return _population(r, spec, node)


def _population(r: RuleNodes, spec: FieldSpec, node: yaml.Node) -> FieldPopulation | None:
    what = f"field {spec.name} population"
    if spec.kind == "bool" and isinstance(node, yaml.ScalarNode):
        return FieldPopulation("share", share=r.number(node, what, 0.5, 0, 1))
    if spec.kind == "enum":
        allowed: tuple[str, ...] = (*spec.values, ABSENT)
    elif spec.kind == "bool":
        allowed = ("share", ABSENT)
    elif spec.kind in ("number", "integer"):
        allowed = (*(k for keys in _NUMBER_SHAPES.values() for k in keys), ABSENT)
    elif spec.kind == "date":
        allowed = (*_DATE_KEYS, ABSENT)
    else:
        allowed = (ABSENT,)
    entries = r.entries(node, what, allowed, list_known=True)
    if entries is None:
        return None
    absent = r.number(entries.pop(ABSENT, None), f"{what} absent", 0.0, 0, 1)
    if not entries:
        return FieldPopulation("declared", absent=absent)
    if spec.kind == "bool":
        return FieldPopulation(
            "share", share=r.number(entries["share"], what, 0.5, 0, 1), absent=absent
        )
    if spec.kind == "enum":
        weights = tuple((k, r.number(v, f"{what} {k}", 0.0, 0)) for k, v in entries.items())
        if sum(w for _, w in weights) <= 0:
            r.error(node, f"{what}: the weights must add up to more than 0")
            return None
        return FieldPopulation("weights", weights=weights, absent=absent)
    if spec.kind == "date":
        return _days(r, spec, node, entries, absent)
    return _number(r, spec, node, entries, absent)


def _number(
    r: RuleNodes, spec: FieldSpec, node: yaml.Node, entries: dict[str, yaml.Node], absent: float
) -> FieldPopulation | None:
    what = f"field {spec.name} population"
    shapes = [s for s, keys in _NUMBER_SHAPES.items() if any(k in entries for k in keys)]
    if len(shapes) != 1:
        given = " and ".join("{" + ", ".join(_NUMBER_SHAPES[s]) + "}" for s in shapes)
        r.error(node, f"{what}: {_ONE_SHAPE}, not {given}" if given else f"{what}: {_ONE_SHAPE}")
        return None
    shape = shapes[0]
    first, second = _NUMBER_SHAPES[shape]
    missing = [k for k in (first, second) if k not in entries]
    if missing:
        r.error(node, f"{what}: {first} goes with {second}; {' and '.join(missing)} is missing")
        return None
    bounds = (spec.minimum, spec.maximum)
    if shape == "uniform":
        low = r.number(entries[first], f"{what} {first}", 0.0, *bounds)
        high = r.number(entries[second], f"{what} {second}", low, *bounds)
        if high < low:
            r.error(entries[second], f"{what}: max {high:g} is below min {low:g}")
            return None
        return FieldPopulation(shape, low=low, high=high, absent=absent)
    if shape == "normal":
        low = r.number(entries[first], f"{what} {first}", 0.0, *bounds)
        high = r.number(entries[second], f"{what} {second}", 0.0, 0)
        return FieldPopulation(shape, low=low, high=high, absent=absent)
    low = r.number(entries[first], f"{what} {first}", 1.0, *bounds)
    if low <= 0:
        r.error(entries[first], f"{what}: a log-normal median must be above 0, got {low:g}")
        return None
    high = r.number(entries[second], f"{what} {second}", 1.0, 1)
    return FieldPopulation(shape, low=low, high=high, absent=absent)


def _days(
    r: RuleNodes, spec: FieldSpec, node: yaml.Node, entries: dict[str, yaml.Node], absent: float
) -> FieldPopulation | None:
    what = f"field {spec.name} population"
    if len(entries) != len(_DATE_KEYS):
        r.error(node, f"{what}: from_days goes with to_days (days from today, e.g. -30 and 365)")
        return None
    span = _DATE_SPAN_DAYS
    low = r.integer(entries["from_days"], f"{what} from_days", 0, -span, span)
    high = r.integer(entries["to_days"], f"{what} to_days", low, -span, span)
    if high < low:
        r.error(entries["to_days"], f"{what}: to_days {high} is before from_days {low}")
        return None
    return FieldPopulation("days", low=low, high=high, absent=absent)
