"""Loading rule directories: every problem is reported at file:line:col."""

from __future__ import annotations

import dataclasses
import shutil
import textwrap
import weakref
from pathlib import Path
from typing import Any

import pytest

from decision_engine.errors import RulesetError
from decision_engine.ruleset.load import load_ruleset

DEMO_RULES = Path(__file__).resolve().parents[2] / "rules"

SCHEMA = """
schema:
  profile:
    clv: {type: number, min: 0}
    churn_risk: {type: number, min: 0, max: 1}
    segment: {type: enum, values: [platinum, gold, silver, bronze]}
    first_name: {type: string}
  intents: [cancel, complaint]
"""

ROUTING = """
routing:
  default: {queue: general, priority: 5}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def base(directory: Path) -> Path:
    """A valid schema and default route; tests add the file under test next to it."""
    write(directory, "00-routing.yaml", ROUTING)
    return write(directory, "00-schema.yaml", SCHEMA)


def problems(directory: Path) -> list[str]:
    with pytest.raises(RulesetError) as info:
        load_ruleset(directory)
    return [str(p) for p in info.value.problems]


def at(path: Path, needle: str, nth: int = 1, shift: int = 0) -> str:
    """`file:line:col` of the nth occurrence of needle in the file (plus shift columns)."""
    text = path.read_text(encoding="utf-8")
    index = -1
    for _ in range(nth):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"{path}:{line}:{col + shift}"


def test_a_minimal_ruleset_loads(tmp_path: Path) -> None:
    base(tmp_path)
    ruleset = load_ruleset(tmp_path)
    assert ruleset.offers == ()
    assert ruleset.default_route.queue == "general"
    assert ruleset.max_offers == 3
    assert ruleset.fields["segment"].values == ("platinum", "gold", "silver", "bronze")
    assert ruleset.fields["intent"].values == ("cancel", "complaint")


# -- YAML and top level --------------------------------------------------------------------


def test_yaml_syntax_error(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(tmp_path, "bad.yaml", "ruleset:\n  label: a: b\n")
    problem, note = problems(tmp_path)
    assert note == f"{tmp_path}: note: 2 other files not checked"
    # libyaml says "in this context", the pure-Python parser "here".
    assert problem.startswith(
        f"{at(bad, ': b')}: error: YAML syntax: mapping values are not allowed"
    )


def test_unknown_top_level_section_with_suggestion(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(tmp_path, "offers.yaml", "# offers\noffer:\n  - id: x\n")
    assert problems(tmp_path) == [
        f"{bad}:2:1: error: unknown key 'offer' in a rule file (did you mean 'offers'?)"
    ]


def test_unknown_top_level_section_without_close_name(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(tmp_path, "x.yaml", "zzz: 1\n")
    assert problems(tmp_path) == [f"{bad}:1:1: error: unknown key 'zzz' in a rule file"]


def test_a_broken_file_is_reported_alone(tmp_path: Path) -> None:
    """The other files are not checked: what they would say follows from the broken
    file's rules missing (here: no default route, an unknown placeholder)."""
    write(tmp_path, "a.yaml", SCHEMA + "offers:\n  - {id: o, value: 1, script: '{x}'}\n")
    bad = write(tmp_path, "b.yaml", "routing:\n  default: {queue: general]\n")
    problem, note = problems(tmp_path)
    assert problem.startswith(f"{bad}:2:")
    assert "YAML syntax" in problem
    assert note == f"{tmp_path}: note: 1 other file not checked"


def test_a_bad_param_is_still_a_param_of_the_script(tmp_path: Path) -> None:
    base(tmp_path)
    path = write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - id: o
            value: 1
            params: {credit: clv *}
            script: "EUR {credit}"
        """,
    )
    (problem,) = problems(tmp_path)
    assert problem.startswith(f"{path}:4:")
    assert "offer o param credit" in problem


def test_a_broken_offer_keeps_its_category_for_contact_policies(tmp_path: Path) -> None:
    base(tmp_path)
    path = write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - {id: o, category: upsell, value: 1}
        arbitration:
          contact_policies:
            - {id: p, categories: [upsell], max_declines: {count: 1, within_days: 1}}
        """,
    )
    assert problems(tmp_path) == [f"{at(path, '{id: o')}: error: offer o has no script"]


@pytest.mark.parametrize("key", ["first", "suppress"])
def test_a_policy_category_no_offer_has_is_an_error(tmp_path: Path, key: str) -> None:
    base(tmp_path)
    path = write(
        tmp_path,
        "arbitration.yaml",
        f"""
        offers:
          - {{id: o, category: hardship, value: 1, script: Hi}}
          - {{id: p, category: lending, value: 1, script: Hi}}
        arbitration:
          policies:
            - {{id: pol, when: clv > 1, {key}: [lending, hardshp]}}
            - {{id: ok, when: clv > 1, {key}: [hardship, lending]}}
        """,
    )
    assert problems(tmp_path) == [
        f"{at(path, 'hardshp')}: error: policy pol {key}: no offer has category 'hardshp' "
        "(did you mean 'hardship'?)"
    ]


def test_a_rule_file_is_a_mapping(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(tmp_path, "x.yaml", "- offers\n")
    assert problems(tmp_path) == [
        f"{bad}:1:1: error: a rule file is a mapping of sections "
        "(ruleset, schema, offers, routing, arbitration, moments, notices)",
        f"{tmp_path}: note: 2 other files not checked",
    ]


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - id: x
            value: 1
            script: hi
            value: 2
        """,
    )
    assert problems(tmp_path) == [f"{at(bad, 'value', 2)}: error: duplicate key 'value' in offer"]


# -- offers --------------------------------------------------------------------------------


def test_unknown_offer_key_with_suggestion(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - id: x
            titel: Hello
            value: 1
            script: hi
        """,
    )
    assert problems(tmp_path) == [
        f"{at(bad, 'titel')}: error: unknown key 'titel' in offer (did you mean 'title'?)"
    ]


def test_duplicate_offer_ids_across_files(tmp_path: Path) -> None:
    base(tmp_path)
    # written second-file-first: files are read in name order, not creation order
    second = write(
        tmp_path,
        "b-offers.yaml",
        """
        offers:
          - id: other
            value: 1
            script: hi
          - id: dup
            value: 2
            script: hi
        """,
    )
    first = write(
        tmp_path,
        "a-offers.yaml",
        """
        offers:
          - id: dup
            value: 1
            script: hi
        """,
    )
    assert problems(tmp_path) == [
        f"{at(second, 'id: dup')}: error: duplicate offer id 'dup' "
        f"(first at {at(first, 'id: dup')})"
    ]


def test_unknown_channel_with_suggestion(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - id: x
            value: 1
            script: hi
            channels: [voice, chta]
        """,
    )
    assert problems(tmp_path) == [
        f"{at(bad, 'chta')}: error: offer x: unknown channel 'chta' (did you mean 'chat'?)"
    ]


@pytest.mark.parametrize("propensity", ["1.5", "-0.1"])
def test_propensity_out_of_range(tmp_path: Path, propensity: str) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "offers.yaml",
        f"""
        offers:
          - id: x
            value: 1
            propensity: {propensity}
            script: hi
        """,
    )
    assert problems(tmp_path) == [
        f"{at(bad, propensity)}: error: propensity must be between 0 and 1, got {propensity}"
    ]


def test_propensity_bounds_are_inclusive(tmp_path: Path) -> None:
    base(tmp_path)
    write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - {id: never, value: 1, propensity: 0, script: hi}
          - {id: always, value: 1, propensity: 1, script: hi}
        """,
    )
    ruleset = load_ruleset(tmp_path)
    assert [(o.id, o.propensity) for o in ruleset.offers] == [("never", 0.0), ("always", 1.0)]


def test_propensity_must_be_a_number(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - id: x
            value: 1
            propensity: high
            script: hi
        """,
    )
    assert problems(tmp_path) == [
        f"{at(bad, 'high')}: error: propensity must be a number, got 'high'"
    ]


def test_negative_cost_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - id: x
            value: 1
            cost: -5
            script: hi
        """,
    )
    found = problems(tmp_path)
    assert len(found) == 1
    assert found[0].startswith(f"{at(bad, '-5')}: error: cost must be")


def test_every_problem_of_an_offer_is_reported(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - id: x
            value: 1
            propensity: 2
            when: clv = 3
            script: "hi {"
        """,
    )
    found = problems(tmp_path)
    assert any(p.startswith(f"{at(bad, '2')}: error: propensity") for p in found)
    assert any(p.startswith(f"{at(bad, '= 3')}: error: offer x:") for p in found)
    assert any("script: unmatched '{'" in p for p in found)


def test_an_empty_offer_is_reported(tmp_path: Path) -> None:
    base(tmp_path)
    write(tmp_path, "offers.yaml", "offers:\n  - {}\n")
    assert problems(tmp_path) != []


def test_an_offer_without_id_or_value(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - title: no id
            value: 1
            script: hi
          - id: novalue
            script: hi
        """,
    )
    assert problems(tmp_path) == [
        f"{at(bad, 'title')}: error: offer has no id",
        f"{at(bad, 'id: novalue')}: error: offer novalue has no value",
    ]


# -- conditions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "token", "shift"),
    [
        ("clv = 5", "clv = 5", 4),
        ('"clv = 5"', "clv = 5", 4),
        ("'clv = 5'", "clv = 5", 4),
    ],
)
def test_bad_condition_in_a_list_item(tmp_path: Path, item: str, token: str, shift: int) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "offers.yaml",
        f"""
        offers:
          - id: x
            value: 1
            script: hi
            when:
              - clv >= 5000
              - {item}
        """,
    )
    assert problems(tmp_path) == [
        f"{at(bad, token, shift=shift)}: error: offer x: unexpected character '=' "
        "(use == to compare)"
    ]


def test_type_error_in_a_list_item_of_a_routing_rule(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "routes.yaml",
        """
        routing:
          rules:
            - id: r
              queue: q
              when:
                - intent == "cancel"
                - segmnt == "gold"
        """,
    )
    assert problems(tmp_path) == [
        f"{at(bad, 'segmnt')}: error: routing r: unknown field 'segmnt' (did you mean 'segment'?)"
    ]


def test_condition_errors_are_located_in_every_section(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "rules.yaml",
        """
        offers:
          - id: o
            value: clv * "x"
            script: hi
            weights:
              - {when: churn_risk > 2, factor: 2}
        routing:
          rules:
            - {id: r, queue: q, when: 'intent == "cancle"'}
        arbitration:
          policies:
            - id: p
              when: clv
        """,
    )
    cancle, quoted_x = '"cancle"', '"x"'
    assert problems(tmp_path) == [
        f"{at(bad, quoted_x)}: error: offer o value: '*' needs a number, but this is a string",
        f"{at(bad, '2,')}: error: offer o weight: 2 is outside the range of churn_risk (0..1)",
        f"{at(bad, cancle)}: error: routing r: 'cancle' is not a value of intent "
        "(cancel, complaint) (did you mean 'cancel'?)",
        f"{at(bad, 'clv', 2)}: error: policy p: expected a condition (true/false), "
        "but this is a number",
    ]


@pytest.mark.parametrize(
    "when",
    [
        "when: >-\n      clv = 5\n",
        "when: |\n      clv = 5\n",
        "when: clv >= 5 and\n      clv = 5\n",
        "when: >-\n      clv >= 5 and\n      clv = 5\n",
    ],
)
def test_multi_line_condition_error_location(tmp_path: Path, when: str) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "offers.yaml",
        "offers:\n  - id: x\n    value: 1\n    script: hi\n    " + when,
    )
    assert problems(tmp_path) == [
        f"{at(bad, 'clv = 5', shift=4)}: error: offer x: unexpected character '=' "
        "(use == to compare)"
    ]


# -- templates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "anchor", "message"),
    [
        (
            '"Hello {frist_name|there}"',
            "{frist",
            "offer x script: unknown placeholder {frist_name} (did you mean 'first_name'?)",
        ),
        ('"Hello {nobody}"', "{nobody", "offer x script: unknown placeholder {nobody}"),
        ('"Hello {"', '{"', "offer x script: unmatched '{' (write {{ for a brace)"),
        ('"Hello }"', '}"', "offer x script: unmatched '}' (write }} for a brace)"),
        ('"Hello { }"', "{ }", "offer x script: placeholder '{ }' must name a field"),
        # Formats: parsed with the template, checked against the field's type.
        (
            '"Limit {clv:mony}"',
            "mony",
            "offer x script: unknown format 'mony' (known: money, number, percent, date)",
        ),
        (
            '"Limit {clv:number x}"',
            "number x",
            "offer x script: number takes a number of decimals (0 to 6), got 'x'",
        ),
        (
            '"Hi {first_name:number}"',
            "{first",
            "offer x script: {first_name}: format number needs a number or integer field, "
            "not a string",
        ),
        (
            '"Limit {clv:money}"',
            "{clv",
            "offer x script: {clv}: format money needs the ruleset's currency "
            "(ruleset: currency: EUR)",
        ),
        # Conditional text: the condition is a `when:` condition, located in the script.
        (
            '"Hi {if clv > }x{end}"',
            "}x",
            "offer x script: condition: expected a value, found end of condition",
        ),
        (
            '"Hi {if clvv > 5}x{end}"',
            "clvv",
            "offer x script: condition: unknown field 'clvv' (did you mean 'clv'?)",
        ),
        (
            '"Hi {if segment > 5}x{end}"',
            "> 5",
            "offer x script: condition: cannot compare a string with a number: segment > 5",
        ),
        ('"Hi {if clv > 5}x"', "{if", "offer x script: {if} has no {end}"),
        ('"Hi x{end}"', "{end", "offer x script: {end} without an open {if}"),
        ('"Hi {else}x"', "{else", "offer x script: {else} without an open {if}"),
        (
            '"Hi {if clv > 5}a{else}b{else}c{end}"',
            "{else}c",
            "offer x script: {else} without an open {if}",
        ),
        (
            '"Hi {if}x{end}"',
            "{if}",
            "offer x script: {if} needs a condition, e.g. {if tenure_months >= 24}",
        ),
    ],
)
def test_bad_template_placeholder(tmp_path: Path, script: str, anchor: str, message: str) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "offers.yaml",
        f"""
        offers:
          - id: x
            value: 1
            script: {script}
        """,
    )
    assert problems(tmp_path) == [f"{at(bad, anchor)}: error: {message}"]


def test_placeholders_may_name_fields_and_params(tmp_path: Path) -> None:
    base(tmp_path)
    write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - id: x
            value: 1
            params:
              credit: clv * 0.01
            script: "{first_name|Hi}, {{EUR}} {credit} on {channel}"
        """,
    )
    (offer,) = load_ruleset(tmp_path).offers
    assert [(p.name, p.fallback) for p in offer.script.names] == [
        ("first_name", "Hi"),
        ("credit", ""),
        ("channel", ""),
    ]


def test_a_missing_script_is_reported(tmp_path: Path) -> None:
    base(tmp_path)
    write(tmp_path, "offers.yaml", "offers:\n  - {id: x, value: 1}\n")
    assert problems(tmp_path) == [f"{tmp_path / 'offers.yaml'}:2:5: error: offer x has no script"]


# -- routing -------------------------------------------------------------------------------


NO_DEFAULT = "no default route: add routing: default: {queue: ..., priority: ...}"


def test_missing_default_route_is_located_at_the_routing_section(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", SCHEMA)
    routing = write(
        tmp_path,
        "b.yaml",
        """
        offers: []
        routing:
          rules:
            - {id: r, queue: q, when: clv > 1}
        """,
    )
    assert problems(tmp_path) == [f"{at(routing, 'routing:')}: error: {NO_DEFAULT}"]


def test_missing_default_route_without_routing_is_the_directory(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", SCHEMA)
    # Not the first file's line 0: nothing in a.yaml is wrong.
    assert problems(tmp_path) == [f"{tmp_path}: error: {NO_DEFAULT}"]


def test_a_built_in_field_declared_again_is_located_at_its_name(tmp_path: Path) -> None:
    base(tmp_path)
    schema = write(tmp_path, "zz.yaml", "schema:\n  profile:\n    channel: {type: string}\n")
    assert problems(tmp_path) == [
        f"{at(schema, 'channel')}: error: field 'channel' is built in; pick another name"
    ]


def test_a_second_default_route(tmp_path: Path) -> None:
    first = base(tmp_path).with_name("00-routing.yaml")
    second = write(tmp_path, "zz.yaml", "routing:\n  default: {queue: other}\n")
    assert problems(tmp_path) == [
        f"{at(second, '{')}: error: a second default route (first: {at(first, '{')})"
    ]


def test_unknown_routing_rule_key(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "routes.yaml",
        """
        routing:
          rules:
            - id: r
              queue: q
              when: clv > 1
              precedense: 5
        """,
    )
    assert problems(tmp_path) == [
        f"{at(bad, 'precedense')}: error: unknown key 'precedense' in routing rule "
        "(did you mean 'precedence'?)"
    ]


def test_routes_are_ordered_by_precedence(tmp_path: Path) -> None:
    base(tmp_path)
    write(
        tmp_path,
        "routes.yaml",
        """
        routing:
          rules:
            - {id: late, queue: q, when: clv > 1, precedence: 50}
            - {id: unset, queue: q, when: clv > 1}
            - {id: early, queue: q, when: clv > 1, precedence: 5}
        """,
    )
    assert [r.id for r in load_ruleset(tmp_path).routes] == ["early", "late", "unset"]


# -- the demo ruleset and versions ---------------------------------------------------------


def test_demo_ruleset_loads_cleanly() -> None:
    ruleset = load_ruleset(DEMO_RULES)
    assert ruleset.label == "demo"
    assert ruleset.max_offers == 3
    assert ruleset.default_route.queue == "general"
    offer_ids = [o.id for o in ruleset.offers]
    assert len(offer_ids) == len(set(offer_ids)) == 10
    assert "retention-loyalty-credit" in offer_ids
    precedences = [r.precedence for r in ruleset.routes]
    assert precedences == sorted(precedences)
    # Precedence 5 and 10: a customer told their card is blocked, then any card security.
    assert [r.id for r in ruleset.routes[:2]] == ["card-compromised-notified", "card-security"]
    assert ruleset.notices is not None
    assert [n.id for n in ruleset.notices.notices] == [
        "card_compromised", "service_outage", "payment_failed", "renewal_offer",
    ]  # fmt: skip
    assert {p.id for p in ruleset.policies} >= {"complaint-no-upsell", "security-first"}
    assert ruleset.fields["contract_end"].kind == "date"
    assert "days_to_contract_end" in ruleset.fields


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(DEMO_RULES, one)
    shutil.copytree(DEMO_RULES, two)
    version = load_ruleset(DEMO_RULES).version
    assert len(version) == 12
    int(version, 16)
    # same content (wherever it lives, however often it is loaded): same version
    assert load_ruleset(one).version == version
    assert load_ruleset(two).version == version
    assert load_ruleset(one).version == version

    # a one-byte change (in a comment, so the rules still load) changes the version
    path = two / "offers.yaml"
    data = path.read_bytes()
    index = data.index(b"#") + 1
    path.write_bytes(data[:index] + b"!" + data[index + 1 :])
    assert len(path.read_bytes()) == len(data)
    changed = load_ruleset(two).version
    assert changed != version

    # and putting the byte back restores it
    path.write_bytes(data)
    assert load_ruleset(two).version == version


def test_version_covers_file_names(tmp_path: Path) -> None:
    base(tmp_path)
    before = load_ruleset(tmp_path).version
    (tmp_path / "00-schema.yaml").rename(tmp_path / "01-schema.yaml")
    assert load_ruleset(tmp_path).version != before


def test_missing_directory(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope") == [f"{tmp_path / 'nope'}: error: rules directory not found"]
    assert problems(tmp_path) == [f"{tmp_path}: error: no .yaml rule files in directory"]


def test_a_daily_cap_counts_customers_unless_the_share_is_set(tmp_path: Path) -> None:
    base(tmp_path)
    write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - {id: one, value: 1, script: hi, daily_cap: 500}
          - {id: three, value: 1, script: hi, daily_cap: 500, daily_cap_per_customer: 3}
          - {id: free, value: 1, script: hi}
        """,
    )
    offers = {o.id: o for o in load_ruleset(tmp_path).offers}
    assert (offers["one"].daily_cap, offers["one"].daily_cap_per_customer) == (500, 1)
    assert (offers["three"].daily_cap, offers["three"].daily_cap_per_customer) == (500, 3)
    assert (offers["free"].daily_cap, offers["free"].daily_cap_per_customer) == (None, None)


def test_a_bad_daily_cap_per_customer_is_located(tmp_path: Path) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - {id: alone, value: 1, script: hi, daily_cap_per_customer: 2}
          - {id: above, value: 1, script: hi, daily_cap: 5, daily_cap_per_customer: 6}
          - {id: half, value: 1, script: hi, daily_cap: 5, daily_cap_per_customer: 1.5}
        """,
    )
    assert problems(tmp_path) == [
        f"{at(bad, '2}')}: error: offer alone: daily_cap_per_customer needs a daily_cap",
        f"{at(bad, '6}')}: error: daily_cap_per_customer must be between 1 and 5, got 6",
        f"{at(bad, '1.5}')}: error: daily_cap_per_customer must be a whole number",
    ]


@pytest.mark.parametrize("offer_id", ["a|b", "a;b", "{a}", "a b", "é"])
def test_an_offer_id_outside_the_id_alphabet_is_located(tmp_path: Path, offer_id: str) -> None:
    base(tmp_path)
    bad = write(
        tmp_path,
        "offers.yaml",
        f"""
        offers:
          - id: "{offer_id}"
            value: 1
            script: hi
        """,
    )
    (problem,) = problems(tmp_path)
    where = at(bad, f'"{offer_id}"')
    assert problem.startswith(f"{where}: error: offer id {offer_id!r}: may contain only"), problem


def test_a_file_that_is_not_utf8_is_a_problem_at_its_line(tmp_path: Path) -> None:
    """Regression: the loader raised UnicodeDecodeError, which no caller expects (the
    rules watcher, and with it the server, went down on a file saved as Latin-1)."""
    base(tmp_path)
    path = tmp_path / "offers.yaml"
    path.write_bytes("# offers\noffers: []\n# révisé\n".encode("latin-1"))
    assert problems(tmp_path) == [
        f"{path}:3:1: error: not UTF-8 text; save the file as UTF-8",
        f"{tmp_path}: note: 2 other files not checked",
    ]


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_file_that_cannot_be_read_is_a_problem(tmp_path: Path) -> None:
    """A rule file whose read fails (here: a link to /proc/self/mem, whose offset 0 is
    unmapped, so reading it is an I/O error even for root)."""
    base(tmp_path)
    link = tmp_path / "zz.yaml"
    link.symlink_to("/proc/self/mem")
    assert problems(tmp_path) == [
        f"{link}: error: cannot be read: Input/output error",
        f"{tmp_path}: note: 2 other files not checked",
    ]


def test_line_ends_do_not_change_the_rules_only_the_version(tmp_path: Path) -> None:
    unix, windows = tmp_path / "unix", tmp_path / "windows"
    shutil.copytree(DEMO_RULES, unix, ignore=shutil.ignore_patterns("tests"))
    shutil.copytree(DEMO_RULES, windows, ignore=shutil.ignore_patterns("tests"))
    for path in windows.glob("*.yaml"):
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    lf, crlf = load_ruleset(unix), load_ruleset(windows)
    assert crlf.version != lf.version
    assert "\r" not in repr(crlf)
    # Everything else, down to each rule's file:line:col, is the same.
    assert repr(dataclasses.replace(crlf, version="")).replace(str(windows), "<dir>") == repr(
        dataclasses.replace(lf, version="")
    ).replace(str(unix), "<dir>")


# -- formats and locale ---------------------------------------------------------------------


def test_ruleset_sets_locale_and_currency(tmp_path: Path) -> None:
    base(tmp_path)
    write(tmp_path, "meta.yaml", "ruleset:\n  label: de\n  locale: de_DE\n  currency: EUR\n")
    ruleset = load_ruleset(tmp_path)
    assert (ruleset.locale, ruleset.currency) == ("de_DE", "EUR")


@pytest.mark.parametrize(
    ("line", "anchor", "message"),
    [
        (
            "locale: xx_YY",
            "xx_YY",
            "unknown locale 'xx_YY' (write it like en_US or de_DE): unknown locale 'xx_YY'",
        ),
        ("currency: EUX", "EUX", "unknown currency 'EUX' (an ISO 4217 code such as EUR, USD, GBP)"),
    ],
)
def test_unknown_locale_or_currency_is_a_load_error(
    tmp_path: Path, line: str, anchor: str, message: str
) -> None:
    base(tmp_path)
    meta = write(tmp_path, "meta.yaml", f"ruleset:\n  {line}\n")
    assert problems(tmp_path) == [f"{at(meta, anchor)}: error: {message}"]


def test_a_format_that_does_not_fit_the_field_is_located_in_a_block_script(tmp_path: Path) -> None:
    base(tmp_path)
    write(tmp_path, "meta.yaml", "ruleset:\n  currency: EUR\n")
    bad = write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - id: x
            value: 1
            script: >-
              Hello {first_name}, your limit is {clv:money}
              and {first_name:date long}.
        """,
    )
    assert problems(tmp_path) == [
        f"{at(bad, '{first_name:date')}: error: offer x script: {{first_name}}: "
        "format date needs a date field, not a string"
    ]


def test_script_conditions_see_params(tmp_path: Path) -> None:
    base(tmp_path)
    write(
        tmp_path,
        "offers.yaml",
        """
        offers:
          - id: x
            value: 1
            params:
              credit: clv * 0.01
            script: "{if credit >= 10 and segment == 'gold'}{credit:number} back{end}"
        """,
    )
    (offer,) = load_ruleset(tmp_path).offers
    assert [p.name for p in offer.script.names] == ["credit"]


POPULATION = """
schema:
  profile:
    vulnerable: {type: bool, population: 0.08}
    has_ev: {type: bool, population: {share: 0.06, absent: 0.1}}
    tier:
      type: enum
      values: [gold, silver, bronze]
      population: {gold: 20, silver: 50, bronze: 30}
    age: {type: integer, min: 18, max: 100, population: {mean: 40, sd: 10}}
    arrears: {type: number, min: 0, population: {median: 1200, spread: 2.5, absent: 0.9}}
    score: {type: number, min: 0, max: 100, population: {min: 0, max: 90}}
    renewal: {type: date, population: {from_days: -30, to_days: 365}}
    nickname: {type: string, population: {absent: 0.3}}
    days_behind: {type: integer, population: {median: 40, spread: 2, present_with: arrears}}
    plain: {type: number}
  intents: {cancel: 10, outage: 30}
"""


def test_a_field_declares_its_population(tmp_path: Path) -> None:
    from decision_engine.ruleset.schema import FieldPopulation

    write(tmp_path, "00-routing.yaml", ROUTING)
    write(tmp_path, "schema.yaml", POPULATION)
    fields = load_ruleset(tmp_path).fields
    pops = {name: spec.population for name, spec in fields.items()}
    assert pops["vulnerable"] == FieldPopulation("share", share=0.08)
    assert pops["has_ev"] == FieldPopulation("share", share=0.06, absent=0.1)
    assert pops["tier"] == FieldPopulation(
        "weights", weights=(("gold", 20), ("silver", 50), ("bronze", 30))
    )
    assert pops["age"] == FieldPopulation("normal", low=40, high=10)
    assert pops["arrears"] == FieldPopulation("lognormal", low=1200, high=2.5, absent=0.9)
    assert pops["score"] == FieldPopulation("uniform", low=0, high=90)
    assert pops["renewal"] == FieldPopulation("days", low=-30, high=365)
    assert pops["nickname"] == FieldPopulation("declared", absent=0.3)
    assert pops["days_behind"] == FieldPopulation(
        "lognormal", low=40, high=2, present_with="arrears"
    )
    assert pops["plain"] is None
    # intents as a mapping: the names, and the weights a simulation draws them by
    assert fields["intent"].values == ("cancel", "outage")
    assert pops["intent"] == FieldPopulation("weights", weights=(("cancel", 10), ("outage", 30)))


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ("{type: bool, population: 1.5}", "population must be between 0 and 1, got 1.5"),
        ("{type: bool, population: {shar: 0.1}}", "unknown key 'shar' in field f population"),
        (
            "{type: enum, values: [a, b], population: {a: 1, c: 2}}",
            "unknown key 'c' in field f population (known: a, b, absent)",
        ),
        ("{type: enum, values: [a, b], population: {a: 0}}", "weights must add up to more"),
        ("{type: number, population: {mean: 3}}", "mean goes with sd; sd is missing"),
        (
            "{type: number, population: {mean: 3, median: 4}}",
            "not {mean, sd} and {median, spread}",
        ),
        ("{type: number, min: 0, max: 10, population: {min: 0, max: 20}}", "between 0 and 10"),
        ("{type: number, population: {median: 5, spread: 0.5}}", "spread must be at least 1"),
        ("{type: number, population: {median: -5, spread: 2}}", "median must be above 0"),
        ("{type: number, population: {absent: 2}}", "absent must be between 0 and 1"),
        ("{type: date, population: {from_days: 10}}", "from_days goes with to_days"),
        ("{type: date, population: {from_days: 10, to_days: 5}}", "is before from_days 10"),
        ("{type: string, population: 0.5}", "field f population must be a mapping"),
        (
            "{type: number, population: {present_with: g}}",
            "present_with names a field declared before it, not 'g'",
        ),
        (
            "{type: number, population: {present_with: g, absent: 0.2}}",
            "present_with or absent, not both",
        ),
    ],
)
def test_a_wrong_population_is_located(tmp_path: Path, declaration: str, message: str) -> None:
    write(tmp_path, "00-routing.yaml", ROUTING)
    path = write(tmp_path, "schema.yaml", f"schema:\n  profile:\n    f: {declaration}\n")
    found = problems(tmp_path)
    assert len(found) == 1 and message in found[0], found
    assert found[0].startswith(f"{path}:3:"), found


def test_an_offers_nodes_are_freed_once_its_spec_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At 10,000 offers the node tree is most of a load's memory: it must not all be
    # alive at once while the specs are built.
    from bench.gen_rules import write_ruleset
    from decision_engine.ruleset import sections

    write_ruleset(tmp_path, offers=50, routes=5)
    built: list[weakref.ref[object]] = []
    alive_at_each: list[int] = []
    real = sections.offer

    def watched(r: Any, node: Any, *args: Any, **kwargs: Any) -> Any:
        alive_at_each.append(sum(ref() is not None for ref in built))
        built.append(weakref.ref(node))
        return real(r, node, *args, **kwargs)

    monkeypatch.setattr(sections, "offer", watched)
    ruleset = load_ruleset(tmp_path)
    assert len(ruleset.offers) == 50
    assert alive_at_each == [0] * 50
