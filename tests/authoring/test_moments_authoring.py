"""Moments for the people who write them: `rules test` moment cases (results, diffs,
mistakes in case files, coverage) and `rules check` (C limits, the trial)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from decision_engine.authoring import cases
from decision_engine.authoring.case_report import format_text
from decision_engine.authoring.case_run import run_cases
from decision_engine.authoring.check import check_command, check_rules
from decision_engine.moments.trial import CRASH_HOOK
from tests.moments.test_limits import utterance_moments

DEMO = Path(__file__).resolve().parents[2] / "rules"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(DEMO, target)
    return target


def only_moment_cases(rules: Path, text: str) -> Path:
    """The case directory holds one moment case file, `text`."""
    for path in (rules / "tests").iterdir():
        path.unlink()
    path = rules / "tests" / "live.yaml"
    path.write_text("now: 2025-03-03T10:00:00Z\ncases:\n" + text, encoding="utf-8")
    return path


CANCEL_CASE = """\
  - name: cancel
    profile: {clv: 2500}
    context: {channel: voice}
    events:
      - {at: 10, event: utterance, speaker: customer, text: I want to cancel}
    expect:
      guidance:
        - {moment: cancel-mentioned, kind: offer, text_contains: "Acknowledge"}
"""


def test_a_moment_case_passes_and_counts_for_coverage(rules: Path) -> None:
    only_moment_cases(rules, CANCEL_CASE)
    report = run_cases(rules)
    assert [(r.name, r.passed) for r in report.results] == [("cancel", True)]
    missed = {u.rule_id for u in report.coverage.unexercised if u.kind == "moment"}
    assert "cancel-mentioned" not in missed
    assert "payment-disclosure-missing" in missed
    text = format_text(report, coverage=True)
    assert "moment payment-disclosure-missing (" in text


def test_a_wrong_expectation_says_what_was_detected_and_when(rules: Path) -> None:
    wrong = CANCEL_CASE.replace("cancel-mentioned, kind: offer", "cancel-high-value-transfer")
    only_moment_cases(rules, wrong + "      none: [cancel-mentioned]\n")
    result = CliRunner().invoke(cases.test_command, [str(rules)])
    assert result.exit_code == 1
    assert (
        "guidance: expected [cancel-high-value-transfer], got [cancel-mentioned]" in result.output
    )
    assert "why: cancel-mentioned at 10s" in result.output
    assert "none: expected no cancel-mentioned, got [cancel-mentioned]" in result.output


def test_each_expected_detail_is_checked(rules: Path) -> None:
    detail = CANCEL_CASE.replace(
        '{moment: cancel-mentioned, kind: offer, text_contains: "Acknowledge"}',
        "{moment: cancel-mentioned, kind: route, severity: critical, title_contains: Nope, "
        "route: {queue: retention}, decide: false, set: {intent: upgrade}, at: 11}",
    )
    only_moment_cases(rules, detail)
    (result,) = run_cases(rules).results
    assert [f.what for f in result.failures] == [
        f"guidance[1] cancel-mentioned.{what}"
        for what in (
            "kind",
            "severity",
            "route.queue",
            "decide",
            "title_contains",
            "set.intent",
            "at",
        )
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("at: 10, event: utterance", "at: 10, event: utterances"), "event: unknown 'utterances'"),
        (("speaker: customer", "speaker: robot"), "speaker: unknown 'robot'"),
        (("speaker: customer", "volume: 3"), "utterance events have no field 'volume'"),
        (("event: utterance", "event: started"), "the case's `context` is the started event"),
        (("moment: cancel-mentioned", "moment: cancel-men"), "moment: unknown 'cancel-men'"),
        (("kind: offer", "kind: advice"), "kind: unknown 'advice'"),
    ],
)  # fmt: skip
def test_mistakes_in_a_moment_case_are_located(
    rules: Path, change: tuple[str, str], message: str
) -> None:
    path = only_moment_cases(rules, CANCEL_CASE.replace(*change))
    (result,) = run_cases(rules).results
    assert result.status == "error"
    assert any(message in p.message and p.file == str(path) and p.line > 2 for p in result.problems)


def test_events_come_in_time_order_and_until_is_after_them(rules: Path) -> None:
    text = CANCEL_CASE.replace(
        "      - {at: 10, event: utterance, speaker: customer, text: I want to cancel}\n",
        "      - {at: 10, event: hold_started}\n      - {at: 5, event: hold_ended}\n",
    )
    only_moment_cases(rules, text)
    (result,) = run_cases(rules).results
    assert "events come in time order: at 5 is before 10" in result.problems[0].message
    late = CANCEL_CASE.replace("    events:", "    until: 5\n    events:")
    only_moment_cases(rules, late)
    (result,) = run_cases(rules).results
    assert "until 5 is before the last event (10)" in result.problems[0].message


def test_a_ruleset_without_moments_has_nothing_for_events_to_test(rules: Path) -> None:
    (rules / "moments.yaml").unlink()
    only_moment_cases(rules, CANCEL_CASE)
    (result,) = run_cases(rules).results
    assert "the ruleset has no moments for `events:` to test" in result.problems[0].message


def test_rules_check_refuses_moments_beyond_durable_rules_limits(rules: Path) -> None:
    (rules / "moments.yaml").write_text(utterance_moments(20), encoding="utf-8")
    report = check_rules(rules)
    assert report.ruleset is None
    (error,) = report.errors
    assert (error.file, error.line) == (str(rules / "moments.yaml"), 62)
    result = CliRunner().invoke(check_command, [str(rules), "--no-trial"])
    assert result.exit_code == 1
    assert f"{rules / 'moments.yaml'}:62:5: error: moment m15: one utterance event" in result.output


def test_rules_check_runs_the_trial_and_reports_a_crash(
    rules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = CliRunner().invoke(check_command, [str(rules)])
    assert ok.exit_code == 0, ok.output
    assert "10 moments" in ok.output
    monkeypatch.setenv(CRASH_HOOK, "moment:card-lost-or-stolen")
    crashed = CliRunner().invoke(check_command, [str(rules)])
    assert crashed.exit_code == 1
    assert "crashed (SIGSEGV) while exercising moment card-lost-or-stolen" in crashed.output
    lines = (rules / "moments.yaml").read_text(encoding="utf-8").splitlines()
    line = lines.index("  - id: card-lost-or-stolen") + 1
    assert f"{rules / 'moments.yaml'}:{line}:5: error:" in crashed.output
    skipped = CliRunner().invoke(check_command, [str(rules), "--no-trial"])
    assert skipped.exit_code == 0
