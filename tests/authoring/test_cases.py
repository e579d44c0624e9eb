"""Rule test cases: the demo's own cases, failure diffs, bad case files, coverage, exit codes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

# The module, not the command: pytest would try to collect a name starting with "test".
from decision_engine.authoring import cases
from decision_engine.authoring.case_report import format_text
from decision_engine.authoring.case_run import run_cases
from decision_engine.errors import RulesetError

DEMO = Path(__file__).resolve().parents[2] / "rules"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$")


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    """A private copy of the demo rules and their cases, free to break."""
    target = tmp_path / "rules"
    shutil.copytree(DEMO, target)
    return target


def run(*args: str) -> Result:
    return CliRunner().invoke(cases.test_command, list(args))


def summary(result: Result) -> tuple[int, int]:
    match = SUMMARY.match(result.output.rstrip("\n").splitlines()[-1])
    assert match, result.output
    return int(match.group(1)), int(match.group(2))


def write_cases(rules: Path, name: str, text: str) -> Path:
    path = rules / "tests" / name
    path.write_text(text, encoding="utf-8")
    return path


WRONG = """\
now: 2025-03-03T10:00:00Z
cases:
  - name: low-value cancel wrongly expected at retention specialists
    profile: {clv: 180, churn_risk: 0.7, cost_to_serve: 420, plan: basic}
    context: {channel: voice, intent: cancel}
    expect:
      routing: {queue: retention_specialists, priority: 8}
      offers: {order: [retention-loyalty-credit]}
      script_contains: {digital-self-service: "four taps"}
"""

DEFAULT_EXPECTED = """\
now: 2025-03-03T10:00:00Z
cases:
  - name: lost card wrongly expected at the default route
    profile: {clv: 5000, churn_risk: 0.1, cost_to_serve: 100, plan: standard}
    context: {channel: voice, intent: lost_card}
    expect:
      routing: {rule: default}
  - name: lost card wrongly expected in the general queue
    profile: {clv: 5000, churn_risk: 0.1, cost_to_serve: 100, plan: standard}
    context: {channel: voice, intent: lost_card}
    expect:
      routing: {queue: general}
"""


class TestDemoCases:
    def test_every_demo_case_passes_and_covers_every_rule(self) -> None:
        report = run_cases(DEMO)
        failed = [(r.name, r.failures, r.problems) for r in report.results if not r.passed]
        assert failed == []
        assert report.passed >= 20
        assert report.coverage.unexercised == ()
        assert report.coverage.percent == 100.0

    def test_each_demo_situation_has_a_case(self) -> None:
        names = [r.name for r in run_cases(DEMO).results]
        for situation in range(1, 8):
            assert any(n.startswith(f"{situation} ") for n in names), situation
        assert any("unknown caller" in n for n in names)
        assert any("store down" in n for n in names)

    def test_cli_passes_with_the_summary_alone_on_the_last_line(self) -> None:
        result = run(str(DEMO), "--coverage")
        assert result.exit_code == 0, result.output
        passed, failed = summary(result)
        assert passed >= 20 and failed == 0
        assert "PASS 1 high-value customer" in result.output
        assert re.search(r"coverage: (\d+) of \1 rules exercised \(100%\)", result.output)
        assert "not exercised" not in result.output

    def test_directory_comes_from_the_environment(self) -> None:
        result = CliRunner().invoke(
            cases.test_command, [], env={"DECISION_ENGINE_RULES": str(DEMO)}
        )
        assert result.exit_code == 0, result.output


class TestFailures:
    def test_a_wrong_expectation_fails_with_a_readable_diff(self, rules: Path) -> None:
        write_cases(rules, "wrong.yaml", WRONG)
        result = run(str(rules))
        assert result.exit_code == 1
        out = result.output
        location = f"{rules / 'tests' / 'wrong.yaml'}:3"
        assert (
            f"FAIL low-value cancel wrongly expected at retention specialists ({location})" in out
        )
        assert "routing.queue: expected retention_specialists, got digital_assist" in out
        # Why the expected route did not apply, with the customer's actual value.
        assert "why: retention-high-value: clv 180 is not >= 10000" in out
        assert "routing.priority" not in out  # priority 8 was right
        assert (
            "offers.order: expected [retention-loyalty-credit], "
            "got [digital-self-service, retention-plan-review]" in out
        )
        # Why the expected offer is not there: its own condition, with the value.
        assert "why: retention-loyalty-credit: clv 180 is not >= " in out
        assert 'script_contains.digital-self-service: expected "four taps", got "Did you' in out
        passed, failed = summary(result)
        assert failed == 1 and passed >= 20

    def test_an_expected_default_route_names_the_rule_that_won(self, rules: Path) -> None:
        write_cases(rules, "default.yaml", DEFAULT_EXPECTED)
        out = run(str(rules)).output
        assert "routing.rule: expected default, got card-security" in out
        assert "routing.queue: expected general, got card_security" in out
        why = 'why: default: routing rule card-security applied (intent == "lost_card" or'
        assert out.count(why) == 2, out
        assert "a routing rule applied" not in out

    def test_failures_as_json(self, rules: Path) -> None:
        write_cases(rules, "wrong.yaml", WRONG)
        result = run(str(rules), "--format", "json")
        assert result.exit_code == 1
        report = json.loads(result.output)
        (case,) = [c for c in report["cases"] if c["status"] != "pass"]
        assert case["status"] == "fail" and case["line"] == 3
        queue = next(f for f in case["failures"] if f["what"] == "routing.queue")
        assert (queue["expected"], queue["actual"]) == ("retention_specialists", "digital_assist")
        assert report["failed"] == 1 and report["coverage"]["percent"] == 100.0

    def test_offer_expectations(self, rules: Path) -> None:
        write_cases(
            rules,
            "offers.yaml",
            """\
now: 2025-03-03
cases:
  - name: general inquiry of a valuable customer
    profile: {segment: gold, clv: 7000, churn_risk: 0.1, tenure_months: 60, plan: standard}
    context: {channel: voice, intent: general_inquiry}
    expect:
      offers:
        first: streaming-bundle
        include: [renewal-personalized]
        exclude: [device-upgrade]
        count: 2
        categories_exclude: [upsell]
      profile_found: false
""",
        )
        out = run(str(rules)).output
        assert "offers.first: expected streaming-bundle, got upgrade-premium-plan" in out
        assert "why: streaming-bundle: offer #3, score 36.00" in out
        assert "offers.include: expected renewal-personalized among the offers" in out
        assert "why: renewal-personalized: days_to_contract_end is absent" in out
        assert "offers.exclude: expected no device-upgrade, got [upgrade-premium-plan" in out
        assert "offers.count: expected 2, got 3 [" in out
        assert (
            "offers.categories_exclude: expected no upsell offers, "
            "got [upgrade-premium-plan (upsell), device-upgrade (upsell)]" in out
        )
        assert "profile_found: expected false, got true" in out


class TestCaseFileErrors:
    def test_an_unknown_key_is_reported_with_file_and_line(self, rules: Path) -> None:
        path = write_cases(
            rules,
            "typo.yaml",
            """\
now: 2025-03-03
cases:
  - name: typo in expect
    context: {channel: voice, intent: cancle}
    expect:
      rouitng: {queue: general}
""",
        )
        result = run(str(rules))
        assert result.exit_code == 1
        assert f"ERROR typo in expect ({path}:3)" in result.output
        assert f"{path}:4:39: error: intent: unknown 'cancle' (did you mean 'cancel'?)" in (
            result.output
        )
        assert f"{path}:6:7: error: unknown key 'rouitng' in expect (did you mean 'routing'?)" in (
            result.output
        )
        passed, failed = summary(result)
        assert failed == 1 and passed >= 20, "the other files still run"

    def test_yaml_syntax_error_is_located(self, rules: Path) -> None:
        path = write_cases(rules, "broken.yaml", "now: 2025-03-03\ncases:\n  - name: [x\n")
        result = run(str(rules))
        assert result.exit_code == 1
        assert f"ERROR broken.yaml ({path}:4)" in result.output
        assert f"{path}:4:1: error: YAML syntax:" in result.output

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("cases: [{name: a, context: {channel: voice}, expect: {degraded: false}}]",
             "1:9: error: no `now`: set it at the top of the file or in the case"),
            ("now: 2025-03-03\ncases:\n  - name: a\n    context: {channel: fax}\n"
             "    expect: {degraded: false}",
             "4:24: error: channel: unknown 'fax' (known: voice, chat"),
            ("now: 2025-03-03\ncases:\n  - name: a\n    profile: {clvv: 1, churn_risk: 2}\n"
             "    context: {channel: voice}\n    expect: {degraded: false}",
             "4:36: error: profile: churn_risk: 2 is above the maximum 1"),
            ("now: 2025-03-03\ncases:\n  - name: a\n    contacts: [{channel: chat}]\n"
             "    context: {channel: voice}\n    expect: {degraded: false}",
             "4:16: error: a contact has either `days_ago` or `at`"),
            ("now: 2025-03-03\ncases:\n  - name: a\n    context: {channel: voice}\n"
             "    expect: {offers: {exclude: [retention-loyalty-credits]}}",
             "unknown 'retention-loyalty-credits' (did you mean 'retention-loyalty-credit'?)"),
            ("now: 2025-03-03\ncases:\n  - name: a\n    degraded: true\n"
             "    profile: {clv: 1}\n    context: {channel: voice}\n    expect: {degraded: true}",
             "3:5: error: a degraded case has no profile or contacts"),
            ("now: tomorrow\ncases: []", "1:6: error: now: 'tomorrow' is not an ISO date"),
        ],
    )  # fmt: skip
    def test_bad_case_files(self, rules: Path, text: str, message: str) -> None:
        path = write_cases(rules, "bad.yaml", text + "\n")
        result = run(str(rules))
        assert result.exit_code == 1
        assert message in result.output
        assert f"{path}:" in result.output

    def test_no_cases_at_all_is_a_failure(self, rules: Path) -> None:
        shutil.rmtree(rules / "tests")
        result = run(str(rules))
        assert result.exit_code == 1
        assert "no test cases" in result.output
        assert summary(result) == (0, 1)


class TestCaseInputs:
    def test_profile_values_are_canonicalised_like_an_import(self, rules: Path) -> None:
        # Text numbers and a datetime for a date field are what an import would accept.
        write_cases(
            rules,
            "canonical.yaml",
            """\
now: 2025-03-03T23:30:00+01:00
cases:
  - name: renewal with text values
    profile: {first_name: Eva, clv: "6000", churn_risk: "0.35", tenure_months: 35.0,
              plan: standard, contract_end: "2025-04-02T08:00:00"}
    context: {channel: voice, intent: general_inquiry}
    expect:
      offers: {first: renewal-personalized}
      script_contains: {renewal-personalized: "ends on 2025-04-02"}
""",
        )
        report = run_cases(rules)
        assert report.failed == 0, format_text(report)

    def test_a_case_sets_its_own_clock_and_cases_can_live_elsewhere(self, tmp_path: Path) -> None:
        (tmp_path / "clock.yaml").write_text(
            """\
now: 2025-01-01
cases:
  - name: the contract ends in 10 days by the case's clock
    now: 2025-03-23T12:00:00Z
    profile: {clv: 6000, churn_risk: 0.35, tenure_months: 35, contract_end: 2025-04-02}
    context: {channel: voice}
    expect: {offers: {first: renewal-personalized}}
""",
            encoding="utf-8",
        )
        report = run_cases(DEMO, cases_dir=tmp_path)
        assert (report.passed, report.failed) == (1, 0)


class TestCoverage:
    def test_an_offer_without_a_case_is_listed(self, rules: Path) -> None:
        offers = rules / "offers.yaml"
        text = offers.read_text(encoding="utf-8")
        line = text.count("\n") + 2
        offers.write_text(
            text
            + "\n  - id: paperless-billing\n    category: service\n"
            + '    when: intent == "upgrade"\n    value: 5\n    script: Go paperless.\n',
            encoding="utf-8",
        )
        result = run(str(rules), "--coverage")
        assert result.exit_code == 0, "coverage reports, it does not fail"
        assert f"offer paperless-billing ({offers}:{line})" in result.output
        found = re.search(r"coverage: (\d+) of (\d+) rules exercised \((\d+)%\)", result.output)
        assert found is not None
        exercised, total, percent = (int(g) for g in found.groups())
        assert exercised == total - 1 and percent == 100 * exercised // total
        report = run_cases(rules)
        assert [u.rule_id for u in report.coverage.unexercised] == ["paperless-billing"]

    def test_without_cases_nothing_but_rules_is_listed(self, rules: Path, tmp_path: Path) -> None:
        empty = tmp_path / "only-lost-card"
        empty.mkdir()
        (empty / "one.yaml").write_text(
            "now: 2025-03-03\ncases:\n  - name: lost card\n    context: {channel: chat, "
            "intent: lost_card}\n    expect: {routing: {queue: card_security}}\n",
            encoding="utf-8",
        )
        report = run_cases(rules, cases_dir=empty)
        missed = {(u.kind, u.rule_id) for u in report.coverage.unexercised}
        assert ("routing", "card-security") not in missed
        assert ("offer", "card-replacement-express") not in missed
        assert ("policy", "security-first") not in missed
        assert ("routing", "default") in missed  # never routed there
        assert ("offer", "retention-loyalty-credit") in missed


class TestBrokenRuleset:
    def test_a_ruleset_that_does_not_load_exits_2_with_its_problems(self, rules: Path) -> None:
        offers = rules / "offers.yaml"
        offers.write_text(
            offers.read_text(encoding="utf-8").replace("clv >= 5000", "clvv >= 5000", 1),
            encoding="utf-8",
        )
        result = run(str(rules))
        assert result.exit_code == 2
        assert f"{offers}:" in result.output
        assert "unknown field 'clvv'" in result.output
        assert "cannot go live" in result.output
        with pytest.raises(RulesetError):
            run_cases(rules)
