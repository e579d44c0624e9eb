"""`rules check`: load errors, the five static warnings with their locations, output, exit codes."""

from __future__ import annotations

import json
import random
import shutil
import textwrap
from itertools import product
from pathlib import Path

import pytest
from click.testing import CliRunner

from decision_engine.authoring import cases
from decision_engine.authoring.check import (
    CheckReport,
    check_command,
    check_rules,
    format_json,
    format_text,
)
from decision_engine.authoring.rule_analysis import _implies, _rule
from decision_engine.authoring.simulate_command import simulate_command
from decision_engine.errors import Where
from decision_engine.ruleset.closures import compile_node
from decision_engine.ruleset.expr import parse
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.spec import Condition
from decision_engine.vocabulary import CHANNELS

DEMO = Path(__file__).resolve().parents[2] / "rules"

# Read first (name order); the file under test is rules.yaml, so its line numbers are
# exactly those of the text each test writes.
BASE = """\
schema:
  profile:
    clv: {type: number, min: 0}
    churn_risk: {type: number, min: 0, max: 1}
    segment: {type: enum, values: [platinum, gold, silver, bronze]}
    tenure_months: {type: integer, min: 0}
  intents: [cancel, complaint, upgrade]
routing:
  default: {queue: general}
"""


def write_rules(tmp_path: Path, body: str) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    (directory / "base.yaml").write_text(BASE)
    (directory / "rules.yaml").write_text(textwrap.dedent(body))
    return directory


def offer(offer_id: str, *lines: str) -> str:
    """A minimal offer; `lines` are extra keys, already indented by 4."""
    extra = "".join(f"    {line}\n" for line in lines)
    return f"  - id: {offer_id}\n{extra}    value: 10\n    script: Hello\n"


def warnings(report: CheckReport) -> list[str]:
    """`rules.yaml:line:col` of each warning (the file under test only)."""
    assert not report.errors, report.errors
    return [f"{Path(w.file).name}:{w.line}:{w.column}" for w in report.warnings]


def messages(report: CheckReport) -> list[str]:
    return [w.message for w in report.warnings]


# -- the demo ruleset ---------------------------------------------------------------------


def test_demo_ruleset_has_no_errors_and_no_warnings() -> None:
    report = check_rules(DEMO)

    assert report.problems == ()
    assert report.ruleset is not None
    assert format_text(report).startswith("ok: ruleset ")


# -- 1. shadowed routing rules ------------------------------------------------------------


def test_rule_implied_by_a_lower_precedence_rule_is_shadowed(tmp_path: Path) -> None:
    directory = write_rules(
        tmp_path,
        """\
        routing:
          rules:
            - id: cancel-any
              when: intent == "cancel"
              queue: retention
              precedence: 10
            - id: cancel-rich
              when: [intent == "cancel", clv >= 10000]
              queue: vip
              precedence: 20
        """,
    )

    report = check_rules(directory)

    assert warnings(report) == ["rules.yaml:7:7"]
    message = messages(report)[0]
    assert message.startswith("routing rule cancel-rich can never apply")
    assert "cancel-any" in message and "rules.yaml:3:7" in message
    assert "precedence 10 is lower than 20" in message


def test_the_narrower_rule_first_shadows_nothing(tmp_path: Path) -> None:
    directory = write_rules(
        tmp_path,
        """\
        routing:
          rules:
            - id: cancel-rich
              when: [intent == "cancel", clv >= 10000]
              queue: vip
              precedence: 10
            - id: cancel-any
              when: intent == "cancel"
              queue: retention
              precedence: 20
        """,
    )

    assert warnings(check_rules(directory)) == []


def test_same_precedence_earlier_in_order_and_a_rule_without_conditions(tmp_path: Path) -> None:
    directory = write_rules(
        tmp_path,
        """\
        routing:
          rules:
            - id: everything
              when: []
              queue: all
            - id: complaints
              when: intent == "complaint"
              queue: care
        """,
    )

    report = check_rules(directory)

    assert warnings(report) == ["rules.yaml:6:7"]
    message = messages(report)[0]
    assert "everything (" in message and "has no conditions" in message
    assert "same precedence 100 and comes first" in message


@pytest.mark.parametrize(
    ("earlier", "later", "shadowed"),
    [
        ("clv >= 1000", "clv > 5000", True),
        ("clv > 5000", "clv >= 1000", False),
        ('intent in ["cancel", "complaint"]', 'intent == "cancel"', True),
        ('intent != "upgrade"', 'intent == "cancel"', True),
        ('intent != "cancel"', 'intent in ["cancel", "complaint"]', False),
        ("exists(clv)", "clv >= 0", True),
        ("not exists(clv)", "clv >= 0", False),
        ("not (clv < 100)", "clv >= 200", True),
        # whole numbers: > 2 is >= 3
        ("tenure_months >= 3", "tenure_months > 2", True),
        ("churn_risk >= 3e-1", "churn_risk > 0.2", False),
        # every segment value, but a customer without a segment satisfies only the later one
        ('segment in ["platinum", "gold", "silver", "bronze"]', "clv >= 1", False),
        # the later rule implies one side of the `or`
        ('intent == "cancel" or clv > 5', 'intent == "cancel"', True),
        ('intent == "cancel" or clv > 5', 'intent == "complaint"', False),
        # or the union of its sides, value by value
        (
            'intent == "cancel" or intent == "complaint"',
            'intent in ["cancel", "complaint"]',
            True,
        ),
        ('not (intent == "upgrade")', 'intent != "upgrade" and clv > 1', True),
        ('intent == "cancel" or clv > 5', 'intent != "upgrade"', False),
        # every case of the later rule must be covered
        ('intent == "cancel" or clv > 5', 'intent == "cancel" or clv > 9', True),
        ('intent == "cancel" or clv > 5', 'intent == "cancel" or clv > 1', False),
        # `not (a or b)` needs a value for both: absent is not false
        ('not (intent == "upgrade" or segment == "gold")', 'intent == "cancel"', False),
        (
            'not (intent == "upgrade" or segment == "gold")',
            'intent == "cancel" and segment == "silver"',
            True,
        ),
        ('intent == "cancel" or clv > 5', '(intent == "cancel" or clv > 5) and clv > 9', True),
    ],
)
def test_shadowing_reasons_per_field(
    tmp_path: Path, earlier: str, later: str, shadowed: bool
) -> None:
    directory = write_rules(
        tmp_path,
        f"""\
        routing:
          rules:
            - id: earlier
              when: '{earlier}'
              queue: a
              precedence: 1
            - id: later
              when: '{later}'
              queue: b
              precedence: 2
        """,
    )

    assert warnings(check_rules(directory)) == (["rules.yaml:7:7"] if shadowed else [])


CARDS = """\
schema:
  profile:
    card_status: {type: enum, values: [active, stolen, blocked]}
    fraud_flag: {type: bool}
    kyc_verified: {type: bool}
  intents: [lost_card, fraud, balance]
routing:
  default: {queue: general}
"""


def write_card_routes(tmp_path: Path, earlier: str, later: str) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    (directory / "base.yaml").write_text(CARDS)
    (directory / "rules.yaml").write_text(
        textwrap.dedent(
            f"""\
            routing:
              rules:
                - id: card-trouble
                  when: '{earlier}'
                  queue: fraud
                  precedence: 10
                - id: lost-unverified
                  when: '{later}'
                  queue: kyc
                  precedence: 40
            """
        )
    )
    return directory


CARD_TROUBLE = 'intent in ["lost_card", "fraud"] or card_status == "stolen" or fraud_flag == true'


def test_a_rule_under_one_side_of_an_earlier_or_is_shadowed(tmp_path: Path) -> None:
    later = 'intent == "lost_card" and kyc_verified == false'
    report = check_rules(write_card_routes(tmp_path, CARD_TROUBLE, later))

    assert warnings(report) == ["rules.yaml:7:7"]
    message = messages(report)[0]
    assert message.startswith("routing rule lost-unverified can never apply")
    assert "card-trouble (" in message and "precedence 10 is lower than 40" in message


@pytest.mark.parametrize(
    "later",
    [
        # balance is not among the earlier rule's intents
        'intent in ["lost_card", "balance"] and kyc_verified == false',
        # a customer with no intent on record but a stolen card is fine; one without is not
        'not (intent == "balance") or kyc_verified == false',
        'card_status != "active" and kyc_verified == false',
        "fraud_flag != true",
    ],
)
def test_a_rule_partly_outside_an_earlier_or_is_not_shadowed(tmp_path: Path, later: str) -> None:
    assert warnings(check_rules(write_card_routes(tmp_path, CARD_TROUBLE, later))) == []


def test_cases_of_a_later_or_each_under_the_earlier_rule(tmp_path: Path) -> None:
    later = (
        '(intent == "fraud" or card_status in ["stolen"]) and not (kyc_verified == true)'
        " or fraud_flag"
    )
    report = check_rules(write_card_routes(tmp_path, CARD_TROUBLE, later))

    assert warnings(report) == ["rules.yaml:7:7"]


# -- 2. conditions that can never all hold ------------------------------------------------


def test_contradictory_offer_conditions(tmp_path: Path) -> None:
    directory = write_rules(
        tmp_path,
        "offers:\n"
        + offer("interval", "when: clv > 5000 and clv < 1000")  # line 2
        + offer("two-intents", 'when: [intent == "cancel", intent == "upgrade"]')  # line 6
        + offer("presence", "when: exists(clv) and not exists(clv)")  # line 10
        + offer("range", "when: churn_risk > 0.5 and churn_risk > 1")  # line 14
        + offer("channel", "channels: [voice, chat]", 'when: channel == "email"')  # line 18
        + offer("fine", "when: clv > 1000 and clv < 5000", "channels: [voice]"),  # line 23
    )

    report = check_rules(directory)

    assert warnings(report) == [
        "rules.yaml:2:5",
        "rules.yaml:6:5",
        "rules.yaml:10:5",
        "rules.yaml:14:5",
        "rules.yaml:18:5",
    ]
    interval, intents, presence, bounded, channel = messages(report)
    assert interval == (
        "offer interval can never be eligible: `clv > 5000` and `clv < 1000` cannot both "
        "hold; fix or remove the condition"
    )
    assert '`intent == "cancel"` and `intent == "upgrade"`' in intents
    assert "`exists(clv)` and `not exists(clv)`" in presence
    assert "churn_risk is declared between 0 and 1" in bounded
    assert '`channel == "email"` and `channels: [voice, chat]`' in channel


def test_contradictory_routing_rule_and_policy(tmp_path: Path) -> None:
    directory = write_rules(
        tmp_path,
        """\
        routing:
          rules:
            - id: never
              when: segment == "gold" and segment not in ["gold", "silver"]
              queue: a
              precedence: 1
            - id: later
              when: segment == "gold"
              queue: b
              precedence: 2
        arbitration:
          policies:
            - id: never-policy
              when: tenure_months > 3 and tenure_months < 4
              first: [service]
        offers:
          - {id: help, category: service, value: 1, script: Hi}
        """,
    )

    report = check_rules(directory)

    # `never` cannot shadow `later`: it never holds, so only the contradictions are reported.
    assert warnings(report) == ["rules.yaml:3:7", "rules.yaml:13:7"]
    route, policy = messages(report)
    assert route.startswith("routing rule never can never apply")
    assert policy.startswith("policy never-policy can never apply")


def test_or_and_arithmetic_are_never_called_contradictory(tmp_path: Path) -> None:
    directory = write_rules(
        tmp_path,
        "offers:\n"
        + offer("either", "when: [clv > 5000 or clv < 1000, clv < 1000]")
        + offer("arith", "when: [clv * 2 > 5000, clv < 1000]")
        + offer("strings", 'when: [segment != "gold", not (segment == "silver")]'),
    )

    assert warnings(check_rules(directory)) == []


# -- 3. no channel ------------------------------------------------------------------------


def test_offer_with_an_empty_channel_list(tmp_path: Path) -> None:
    directory = write_rules(
        tmp_path,
        "offers:\n" + offer("nowhere", "channels: []") + offer("everywhere"),
    )

    report = check_rules(directory)

    assert warnings(report) == ["rules.yaml:2:5"]
    assert "offer nowhere is eligible on no channel" in messages(report)[0]
    assert report.ruleset is not None
    assert [o.channels for o in report.ruleset.offers] == [(), CHANNELS]


# -- 4. overlapping rules of equal precedence --------------------------------------------


def test_overlapping_rules_with_the_same_precedence(tmp_path: Path) -> None:
    directory = write_rules(
        tmp_path,
        """\
        routing:
          rules:
            - id: cancel
              when: intent == "cancel"
              queue: retention
            - id: rich
              when: clv >= 5000
              queue: vip
            - id: upgrade
              when: intent == "upgrade"
              queue: sales
              precedence: 100
        """,
    )

    report = check_rules(directory)

    # cancel/upgrade are disjoint; rich overlaps both (a rich customer upgrading).
    assert warnings(report) == ["rules.yaml:6:7", "rules.yaml:9:7"]
    first, second = messages(report)
    assert "routing rules cancel (" in first and "rules.yaml:3:7" in first
    assert "cancel wins today only because it comes first" in first
    assert "distinct precedences" in first
    assert "routing rules rich (" in second


def test_distinct_precedences_do_not_overlap(tmp_path: Path) -> None:
    directory = write_rules(
        tmp_path,
        """\
        routing:
          rules:
            - id: cancel
              when: intent == "cancel"
              queue: retention
              precedence: 1
            - id: rich
              when: clv >= 5000
              queue: vip
              precedence: 2
        """,
    )

    assert warnings(check_rules(directory)) == []


# -- 5. enum values no offer serves -------------------------------------------------------


def test_segments_no_offer_can_serve(tmp_path: Path) -> None:
    offers = offer("top", 'when: segment in ["platinum", "gold"]') + offer(
        "gold-only", 'when: segment == "gold" and clv > 10'
    )
    directory = write_rules(tmp_path, "offers:\n" + offers)

    report = check_rules(directory)

    assert warnings(report) == ["rules.yaml:2:5"]
    assert messages(report)[0].startswith(
        'no offer can ever be eligible when segment is "silver" or "bronze"'
    )


def test_an_offer_without_a_segment_condition_serves_every_segment(tmp_path: Path) -> None:
    offers = offer("top", 'when: segment in ["platinum", "gold"]') + offer("anyone")
    directory = write_rules(tmp_path, "offers:\n" + offers)

    assert warnings(check_rules(directory)) == []


# -- errors and unreadable input ----------------------------------------------------------


def test_load_errors_are_reported_with_no_ruleset(tmp_path: Path) -> None:
    directory = tmp_path / "rules"
    shutil.copytree(DEMO, directory)
    offers = directory / "offers.yaml"
    text = offers.read_text()
    offers.write_text(text.replace("clv >= 5000", "clvv >= 5000"))
    line = text[: text.index("clv >= 5000")].count("\n") + 1

    report = check_rules(directory)

    assert report.ruleset is None
    assert [(Path(p.file).name, p.line, p.severity) for p in report.problems] == [
        ("offers.yaml", line, "error")
    ]
    assert "unknown field 'clvv'" in report.problems[0].message
    assert format_text(report).splitlines()[-1] == "1 error; this ruleset cannot go live"


def _demo_with(tmp_path: Path, name: str, old: str, new: str) -> tuple[Path, int]:
    """A copy of the demo rules with one edit; the directory and the edit's line."""
    directory = tmp_path / "rules"
    shutil.copytree(DEMO, directory)
    path = directory / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return directory, text[: text.index(old)].count("\n") + 1


def _listed(report: CheckReport) -> list[tuple[str, str]]:
    return [(Path(p.file).name, p.severity) for p in report.problems]


@pytest.mark.parametrize("name", ["offers.yaml", "routing.yaml", "arbitration.yaml"])
def test_a_yaml_error_is_reported_alone_with_the_files_not_checked(
    tmp_path: Path, name: str
) -> None:
    # A stray `]`: the file's rules are lost, and the other files would say so
    # ("no offer has category", "no default route") if they were checked.
    directory, _ = _demo_with(tmp_path, name, "- id: ", "- id: ]")
    others = len(list(directory.glob("*.yaml"))) - 1

    report = check_rules(directory)

    assert report.ruleset is None
    assert _listed(report) == [(name, "error"), ("rules", "note")]
    assert report.errors[0].message.startswith("YAML syntax")
    assert report.problems[-1].message == f"{others} other files not checked"
    assert str(report.problems[-1]) == f"{directory}: note: {others} other files not checked"
    assert format_text(report).splitlines()[-1] == "1 error; this ruleset cannot go live"


@pytest.mark.parametrize("name", ["rules test", "simulate"])
def test_every_command_sums_up_a_broken_ruleset_as_check_does(tmp_path: Path, name: str) -> None:
    directory, _ = _demo_with(tmp_path, "offers.yaml", "- id: ", "- id: ]")
    summary = format_text(check_rules(directory)).splitlines()[-1].split(";")[0]
    command, args = {
        "rules test": (cases.test_command, [str(directory)]),
        "simulate": (simulate_command, ["--rules", str(directory)]),
    }[name]

    result = CliRunner().invoke(command, args)

    assert result.exit_code == 2, result.output
    assert summary == "1 error"
    assert result.stderr.splitlines()[-1].startswith(
        f"{summary};" if name == "rules test" else f"{summary} in"
    )


def test_a_broken_offer_does_not_make_its_category_unknown(tmp_path: Path) -> None:
    # streaming-bundle is the only cross_sell offer, and policies suppress cross_sell:
    # the offer is wrong, they are not.
    directory, line = _demo_with(tmp_path, "offers.yaml", "value: 240\n", "value: 240 +\n")
    report = check_rules(directory)
    assert [(Path(p.file).name, p.line) for p in report.problems] == [("offers.yaml", line)]


def test_a_bad_param_does_not_make_its_placeholder_unknown(tmp_path: Path) -> None:
    directory, line = _demo_with(
        tmp_path, "offers.yaml", "credit: min(round(clv", "credit: min(round(clvv"
    )
    report = check_rules(directory)
    assert [(Path(p.file).name, p.line) for p in report.problems] == [("offers.yaml", line)]
    assert "unknown field 'clvv'" in report.problems[0].message


def test_a_file_that_is_not_utf8_is_an_error_with_its_line(tmp_path: Path) -> None:
    directory = write_rules(tmp_path, "offers:\n")
    (directory / "rules.yaml").write_bytes(b"offers:\n  - id: caf\xe9\n")

    report = check_rules(directory)

    assert [(Path(p.file).name, p.line) for p in report.errors] == [("rules.yaml", 2)]
    assert [p.message for p in report.problems][-1] == "1 other file not checked"


def test_missing_directory_cannot_be_checked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        check_rules(tmp_path / "nope")
    (tmp_path / "file.yaml").write_text("offers: []\n")
    with pytest.raises(NotADirectoryError):
        check_rules(tmp_path / "file.yaml")


# -- output -------------------------------------------------------------------------------


def test_text_output_lists_warnings_then_the_summary(tmp_path: Path) -> None:
    directory = write_rules(tmp_path, "offers:\n" + offer("nowhere", "channels: []"))

    lines = format_text(check_rules(directory)).splitlines()

    assert lines[0].endswith(
        "rules.yaml:2:5: warning: offer nowhere is eligible on no channel "
        "(`channels: []`); list the channels it may be proposed on, or "
        "remove `channels` to allow every channel"
    )
    assert lines[1].startswith("ok: ruleset ")
    assert lines[1].endswith("(no label): 1 offers, 0 routing rules, 0 policies; 1 warning")


def test_json_output_shape(tmp_path: Path) -> None:
    directory = write_rules(tmp_path, "offers:\n" + offer("nowhere", "channels: []"))
    report = check_rules(directory)

    data = json.loads(format_json(report))

    assert report.ruleset is not None
    assert data["version"] == report.ruleset.version
    assert data["ok"] is True
    assert data["problems"] == [
        {
            "file": str(directory / "rules.yaml"),
            "line": 2,
            "column": 5,
            "severity": "warning",
            "message": report.warnings[0].message,
        }
    ]


def test_json_output_with_errors(tmp_path: Path) -> None:
    directory = write_rules(tmp_path, "offers:\n  - id: x\n    value: clvv\n    script: Hi\n")

    data = json.loads(format_json(check_rules(directory)))

    assert data["version"] is None
    assert data["ok"] is False
    assert [(p["line"], p["severity"]) for p in data["problems"]] == [(3, "error")]


# -- the command --------------------------------------------------------------------------


def test_command_exit_0_on_a_clean_ruleset() -> None:
    result = CliRunner().invoke(check_command, [str(DEMO)])

    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ruleset ")


def test_command_exit_0_with_warnings_and_json(tmp_path: Path) -> None:
    directory = write_rules(tmp_path, "offers:\n" + offer("nowhere", "channels: []"))

    result = CliRunner().invoke(check_command, [str(directory), "--format", "json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["problems"][0]["severity"] == "warning"


def test_command_exit_1_on_errors(tmp_path: Path) -> None:
    directory = write_rules(tmp_path, "offers:\n  - id: x\n    value: clvv\n    script: Hi\n")

    result = CliRunner().invoke(check_command, [str(directory)])

    assert result.exit_code == 1
    assert "rules.yaml:3:12: error: offer x value: unknown field 'clvv'" in result.output


def test_command_exit_2_when_the_directory_is_missing(tmp_path: Path) -> None:
    result = CliRunner().invoke(check_command, [str(tmp_path / "nope")])

    assert result.exit_code == 2
    assert "rules directory not found" in result.stderr


def test_command_reads_the_directory_from_the_environment(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        check_command, [], env={"DECISION_ENGINE_RULES": str(tmp_path / "nope")}
    )

    assert result.exit_code == 2
    assert str(tmp_path / "nope") in result.stderr


# -- shadowing against brute force ---------------------------------------------------------

SMALL = {
    "intent": FieldSpec("intent", "enum", values=("cancel", "complaint", "upgrade")),
    "tier": FieldSpec("tier", "enum", values=("gold", "silver")),
    "vip": FieldSpec("vip", "bool"),
}


def _random_condition(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.3:
        if rng.random() < 0.05:
            return "tier == tier"  # a term the checker cannot read: only its shape counts
        name = rng.choice(sorted(SMALL))
        spec = SMALL[name]
        if spec.kind == "bool":
            return rng.choice(["vip", "vip == true", "vip == false", "vip != true", "exists(vip)"])
        values = [f'"{v}"' for v in spec.values]
        picked = rng.sample(values, rng.randint(1, len(values)))
        return rng.choice(
            [
                f"{name} == {picked[0]}",
                f"{name} != {picked[0]}",
                f"{name} in [{', '.join(picked)}]",
                f"{name} not in [{', '.join(picked)}]",
                f"not exists({name})",
            ]
        )
    kind = rng.choice(["and", "or", "or", "not"])
    if kind == "not":
        return f"not ({_random_condition(rng, depth - 1)})"
    parts = [_random_condition(rng, depth - 1) for _ in range(rng.randint(2, 3))]
    return f" {kind} ".join(f"({p})" for p in parts)


def _assignments() -> list[dict[str, object]]:
    choices = [[(n, v) for v in (*(s.values or (True, False)), None)] for n, s in SMALL.items()]
    return [{n: v for n, v in combo if v is not None} for combo in product(*choices)]


def test_shadowing_never_disagrees_with_brute_force() -> None:
    rng = random.Random(20261202)
    facts = _assignments()
    claimed = true = 0
    for _ in range(1500):
        earlier_text = _random_condition(rng, 3)
        later_text = _random_condition(rng, 3)
        if rng.random() < 0.4:  # a narrowing of the earlier rule, often truly shadowed
            later_text = f"({earlier_text}) and ({later_text})"
        elif rng.random() < 0.3:
            later_text = _random_condition(rng, 1)
        earlier, later = parse(earlier_text), parse(later_text)
        holds_earlier, holds_later = compile_node(earlier), compile_node(later)
        shadowed = all(holds_earlier(f) is True for f in facts if holds_later(f) is True)
        where = Where("rules.yaml", 1)
        says = _implies(
            _rule("later", "apply", where, [Condition(later_text, later, where)]),
            _rule("earlier", "apply", where, [Condition(earlier_text, earlier, where)]),
            SMALL,
        )
        assert shadowed or not says, (earlier_text, later_text)
        claimed += says
        true += shadowed
    print(f"shadowing found {claimed} of {true} true cases")
    assert true > 300 and claimed >= 0.9 * true


def test_the_docs_show_the_summary_rules_check_prints(tmp_path: Path) -> None:
    directory = tmp_path / "rules"
    shutil.copytree(DEMO, directory)
    offers = directory / "offers.yaml"
    text = offers.read_text()
    text = text.replace("clv >= 5000", "clvv >= 5000").replace("clv < 1000", "clvx < 1000")
    offers.write_text(text)
    summary = format_text(check_rules(directory)).splitlines()[-1]
    errors = summary.split(" ", 1)[0]
    assert summary == f"{errors} errors; this ruleset cannot go live" and int(errors) >= 2
    docs = (DEMO.parent / "docs" / "rules.md").read_text()
    example = docs.split("A file with a mistake is refused", 1)[1].split("```", 2)[1]
    assert example.strip().splitlines()[-1] == "2 errors; this ruleset cannot go live"
