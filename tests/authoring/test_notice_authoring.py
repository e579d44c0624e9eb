"""Notices in authoring: notice cases in `rules test`, and `rules check`'s notice warnings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from decision_engine.authoring import cases
from decision_engine.authoring.case_report import format_text
from decision_engine.authoring.case_run import run_cases
from decision_engine.authoring.check import check_command, check_rules
from decision_engine.decide import notices as planner
from decision_engine.ruleset.compiled import load_compiled

DEMO = Path(__file__).resolve().parents[2] / "rules"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    """A private copy of the demo rules and their cases, free to break."""
    target = tmp_path / "rules"
    shutil.copytree(DEMO, target)
    return target


def only(rules: Path, text: str) -> Path:
    """The demo rules with this one case file instead of the demo's cases."""
    shutil.rmtree(rules / "tests")
    (rules / "tests").mkdir()
    path = rules / "tests" / "notices.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(path: Path, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, 1) if text in line)


# -- the demo's notice cases ----------------------------------------------------------------


def test_the_demo_notice_cases_pass_and_cover_every_notice() -> None:
    report = run_cases(DEMO)
    notice_cases = [r for r in report.results if r.name.startswith("notice, ")]
    assert len(notice_cases) >= 12
    assert all(r.passed for r in notice_cases), [(r.name, r.failures) for r in notice_cases]
    assert [u for u in report.coverage.unexercised if u.kind == "notice"] == []
    demo = load_compiled(DEMO).source.notices
    assert demo is not None and len(demo.notices) == 4


def test_urgent_quiet_hours_broken_in_the_planner_fails_a_demo_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = planner._plan

    def urgent_also_held(*args: Any) -> planner.NoticePlan:
        """As if urgent did not override the quiet hours."""
        plan = original(*args)
        rules, now = args[1], args[-1]
        zone = planner._zone("", rules.default_timezone)
        opens = planner.quiet_until(rules.quiet_hours, zone, now)
        if plan.status == planner.SEND and opens is not None:
            return planner._replace_held(plan, opens, "held although urgent")
        return plan

    monkeypatch.setattr(planner, "_plan", urgent_also_held)
    report = run_cases(DEMO)
    failed = {r.name: r.failures for r in report.results if not r.passed}
    name = "notice, a compromised card is texted at once, even at night"
    assert name in failed
    (failure,) = failed[name]
    assert (failure.what, failure.expected, failure.actual) == (
        "notices.card_compromised.status",
        "send",
        "held",
    )
    assert "held although urgent" in failure.why


# -- failures say what and why --------------------------------------------------------------

WRONG = """\
now: 2025-03-03T10:00:00Z
cases:
  - name: a renewal offer expected although the cap is reached
    profile: {clv: 2500, contract_end: 2025-05-02, email: a@example.com, email_opt_in: true}
    event: {type: contract_end_in_60_days}
    notices_sent:
      - {notice: service_outage, key: OUT-1, hours_ago: 3}
      - {notice: payment_failed, key: "2025-03-10", hours_ago: 5}
    expect:
      notices: [{notice: renewal_offer, channel: email}]
  - name: an outage at night expected at once, by sms, with the wrong text
    now: 2025-03-03T22:00:00Z
    profile: {app_token: tok}
    event: {type: service_outage, attributes: {outage_id: OUT-2}}
    expect:
      notices:
        - notice: service_outage
          channel: sms
          held_until: 2025-03-04T07:00:00+01:00
          text_contains: [fixed by noon]
  - name: a compromised card expected suppressed by dedupe
    profile: {phone: "+31600000001", sms_opt_in: false}
    event: {type: card_compromised, attributes: {card_last4: "4242"}}
    expect:
      suppressed: {card_compromised: dedupe}
  - name: a failed payment expected suppressed but sent
    profile: {email: b@example.com, email_opt_in: true}
    event: {type: payment_failed, attributes: {amount: 5, due_date: 2025-03-10}}
    expect:
      notices: []
      suppressed: {payment_failed: no_channel}
"""


def test_failures_print_expected_got_and_why(rules: Path) -> None:
    only(rules, WRONG)
    report = run_cases(rules)
    assert [r.status for r in report.results] == ["fail"] * 4
    capped, night, consent, sent = (r.failures for r in report.results)
    assert [(f.what, f.expected, f.actual) for f in capped] == [
        ("notices", "[renewal_offer]", "[]")
    ]
    assert capped[0].why == (
        "renewal_offer: cap: 2 non-urgent notices in the last 24 h (at most 2 a day)"
    )
    assert [(f.what, f.expected, f.actual) for f in night] == [
        ("notices.service_outage.channel", "sms", "app"),
        (
            "notices.service_outage.held_until",
            "2025-03-04T07:00:00+01:00",
            "2025-03-04T08:00:00+01:00",
        ),
        ("notices.service_outage.text_contains", '"fixed by noon"', night[2].actual),
    ]
    assert night[1].why == "service_outage: quiet hours; held until 08:00 CET"
    assert [(f.what, f.expected, f.actual, f.why) for f in consent] == [
        (
            "suppressed.card_compromised",
            "dedupe",
            "no_consent",
            "card_compromised: no_consent: sms: no consent (sms_opt_in)",
        )
    ]
    assert [(f.what, f.expected, f.actual) for f in sent] == [
        ("notices", "[]", "[payment_failed by email]"),
        ("suppressed.payment_failed", "suppressed (no_channel)", "payment_failed by email"),
    ]
    text = format_text(report)
    assert "  notices: expected [renewal_offer], got []\n    why: renewal_offer: cap: " in text
    assert text.endswith("0 passed, 4 failed")


def test_json_output_has_the_notice_cases(rules: Path) -> None:
    only(rules, WRONG)
    result = CliRunner().invoke(cases.test_command, [str(rules), "--format", "json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["failed"] == 4
    first = data["cases"][0]
    assert first["status"] == "fail"
    assert first["failures"][0]["what"] == "notices"
    assert first["failures"][0]["why"].startswith("renewal_offer: cap")
    unexercised = {u["id"] for u in data["coverage"]["unexercised"] if u["kind"] == "notice"}
    assert unexercised == {"card_compromised", "renewal_offer"}


def test_coverage_lists_the_notices_no_case_sent(rules: Path) -> None:
    (rules / "tests" / "notices.yaml").unlink()
    result = CliRunner().invoke(cases.test_command, [str(rules), "--coverage"])
    assert result.exit_code == 0, result.output
    for notice in ("card_compromised", "service_outage", "payment_failed", "renewal_offer"):
        line = line_of(rules / "notices.yaml", f"- id: {notice}")
        assert f"    notice {notice} ({rules / 'notices.yaml'}:{line})" in result.output


# -- bad case files -------------------------------------------------------------------------

BAD = """\
now: 2025-03-03T10:00:00Z
cases:
  - name: typos everywhere
    profile: {phone: "+31600000001"}
    event: {type: card_compromised, atributes: {card_last4: "4242"}}
    notices_sent:
      - {notice: card_compromised, hours_ago: 2, days_ago: 1}
      - {notice: card_compromized, at: 2025-03-03T09:00:00Z}
    expect:
      notices:
        - {notice: card_compromised, chanel: sms}
  - name: wrong event, attribute and notice
    event: {type: card_stolen}
    expect: {notices: []}
  - name: an attribute the event does not have, a notice of another event
    event: {type: service_outage, attributes: {outage: X, restored_by: 7}}
    expect:
      notices: [{notice: service_outage, status: sent}]
      suppressed: {payment_failed: cap, service_outage: quiet_hours}
  - name: expect says nothing, a sent notice in the future
    event: {type: payment_failed, attributes: {amount: -1, due_date: someday}}
    notices_sent: [{notice: payment_failed, at: 2025-03-04T10:00:00Z}]
    context: {channel: voice}
    expect: {}
"""


def test_bad_notice_cases_are_located_problems(rules: Path) -> None:
    path = only(rules, BAD)
    report = run_cases(rules)
    assert [r.status for r in report.results] == ["error"] * 4
    found = [(p.line, p.message) for r in report.results for p in r.problems]

    def at(fragment: str) -> int:
        return line_of(path, fragment)

    expected = [
        (at("atributes"), "did you mean 'attributes'"),
        (at("days_ago: 1"), "a sent notice has one of `hours_ago`, `days_ago` or `at`"),
        (
            at("card_compromized"),
            "notice: unknown 'card_compromized' (did you mean 'card_compromised'?)",
        ),
        (at("chanel"), "did you mean 'channel'"),
        (at("card_stolen"), "event type: unknown 'card_stolen'"),
        (
            at("outage: X"),
            "event service_outage has no attribute 'outage' (did you mean 'outage_id'?)",
        ),
        (at("status: sent"), "status: unknown 'sent'"),
        (
            at("payment_failed: cap"),
            "notice payment_failed reacts to payment_failed, not to service_outage",
        ),
        (at("service_outage: quiet_hours"), "suppressed service_outage: unknown 'quiet_hours'"),
        (at("amount: -1"), "amount: -1 is below the minimum 0"),
        (at("amount: -1"), "due_date: 'someday' is not an ISO date"),
        (at("at: 2025-03-04"), "a sent notice is sent after the case's `now`"),
        (at("context: {channel"), "unknown key 'context' in a case"),
        (at("expect: {}"), "expect says nothing"),
    ]
    for line, fragment in expected:
        assert any(n == line and fragment in m for n, m in found), (line, fragment, found)


def test_a_notice_case_needs_a_ruleset_with_notices(rules: Path) -> None:
    (rules / "notices.yaml").unlink()
    only(rules, BAD.split("  - name: wrong event")[0])
    (result,) = run_cases(rules).results
    assert any("the ruleset has no notices" in p.message for p in result.problems)


def test_empty_notices_expects_none_and_a_held_notice_is_not_send(rules: Path) -> None:
    path = only(
        rules,
        """\
now: 2025-03-03T22:00:00Z
cases:
  - name: none expected, one held
    profile: {app_token: tok}
    event: {type: service_outage, attributes: {outage_id: OUT-2}}
    expect: {notices: []}
  - name: held expected with status send
    profile: {app_token: tok}
    event: {type: service_outage, attributes: {outage_id: OUT-2}}
    expect:
      notices: [{notice: service_outage, status: send, held_until: 2025-03-04T08:00:00+01:00}]
""",
    )
    held, contradictory = run_cases(rules).results
    assert [(f.what, f.actual) for f in held.failures] == [
        ("notices", "[service_outage held (app)]")
    ]
    assert [(p.line, p.message) for p in contradictory.problems] == [
        (line_of(path, "held_until"), "a notice sent at once (status: send) is not held")
    ]


# -- rules check ----------------------------------------------------------------------------


def test_the_demo_notices_need_no_warning_and_are_counted() -> None:
    assert check_rules(DEMO).problems == ()
    result = CliRunner().invoke(check_command, [str(DEMO)])
    assert result.exit_code == 0
    assert result.output.rstrip().endswith(", 10 moments, 4 notices")


def test_a_notice_whose_conditions_cannot_hold(rules: Path) -> None:
    path = rules / "notices.yaml"
    edit(path, "when: clv >= 1000 and days_to_contract_end >= 0", "when: clv >= 1000 and clv < 500")
    (warning,) = check_rules(rules).warnings
    assert (warning.line, warning.column) == (line_of(path, "- id: renewal_offer"), 7)
    assert warning.message == (
        "notice renewal_offer can never be sent: `clv >= 1000` and `clv < 500` cannot both "
        "hold; fix or remove the condition"
    )


def test_a_notice_whose_conditions_rule_out_every_channel(rules: Path) -> None:
    path = rules / "notices.yaml"
    edit(
        path,
        "      on: payment_failed\n",
        "      on: payment_failed\n      when: not email_opt_in\n",
    )
    edit(
        path,
        "      on: service_outage\n",
        "      on: service_outage\n"
        "      when: push_opt_out and sms_opt_in != true and not email_opt_in\n",
    )
    messages = {w.line: w.message for w in check_rules(rules).warnings}
    assert messages == {
        line_of(path, "- id: service_outage"): "notice service_outage can never be sent: whenever "
        "its conditions hold, app is opted out (push_opt_out is true), sms has no consent "
        "(sms_opt_in is not true) and email has no consent (email_opt_in is not true); fix the "
        "condition or the channels",
        line_of(path, "- id: payment_failed"): "notice payment_failed can never be sent: whenever "
        "its conditions hold, email has no consent (email_opt_in is not true); fix the condition "
        "or the channels",
    }


@pytest.mark.parametrize(
    "when",
    [
        "push_opt_out and not sms_opt_in",  # email is still possible
        "push_opt_out or not sms_opt_in",  # an `or` is never read as a contradiction
        "not (push_opt_out or sms_opt_in or email_opt_in)",  # app: not opted out
        "clv > 0 and clv < 1 and sms_opt_in",
    ],
)
def test_a_notice_that_can_be_sent_is_not_warned_about(rules: Path, when: str) -> None:
    edit(
        rules / "notices.yaml",
        "      on: service_outage\n",
        f"      on: service_outage\n      when: {when}\n",
    )
    assert check_rules(rules).problems == ()


def test_an_event_type_no_notice_reacts_to(rules: Path) -> None:
    path = rules / "notices.yaml"
    edit(
        path,
        "    payment_failed:\n      attributes:",
        "    parcel_lost:\n"
        "      attributes: {parcel_id: {type: string}}\n"
        "    payment_failed:\n      attributes:",
    )
    (warning,) = check_rules(rules).warnings
    # At the event type's declaration, as its load errors are.
    assert (warning.line, warning.column) == (line_of(path, "parcel_lost:") + 1, 7)
    assert warning.message.startswith("event type parcel_lost has no notice on it")


def test_a_key_date_event_on_a_field_that_is_not_a_date_is_one_error(rules: Path) -> None:
    path = rules / "notices.yaml"
    edit(path, "      date: contract_end", "      date: clv")
    report = check_rules(rules)
    assert [(e.line, e.message) for e in report.errors] == [
        (
            line_of(path, "date: clv"),
            "event contract_end_in_60_days date: clv is a number, not a date field",
        )
    ]
