"""Rule test cases: business users prove a rule change before it goes live.

Case files are YAML in `<rules>/tests/*.yaml`. Each case describes a customer, their
earlier contacts and the live interaction, and what the agent should see. Cases run
through the same `decide()` as the server, so a passing case is what production does.
A case with `events:` is a moment case (moment_case_read.py), one with `event:` a
notice case (notice_case_read.py).

    now: 2025-03-03T10:00:00Z          # the clock for every case (UTC); a case may set its own
    cases:
      - name: valuable customer who wants to cancel
        profile: {clv: 48000, churn_risk: 0.82, first_name: Alice}   # omit: unknown customer
        contacts: [{days_ago: 2, channel: chat, intent: billing_dispute}]
        context: {channel: voice, intent: cancel}
        expect:
          routing: {queue: retention_specialists, priority: 1}
          offers: {first: retention-loyalty-credit, categories_exclude: [upsell]}
          script_contains: {retention-loyalty-credit: "EUR 480"}
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from decision_engine.authoring.case_report import format_text, problem_dict, report_dict
from decision_engine.authoring.case_run import run_cases
from decision_engine.config import rules_dir_argument
from decision_engine.errors import RulesetError, tally


@click.command(name="test")
@rules_dir_argument()
@click.option(
    "--cases",
    "cases_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Directory of case files [default: DIRECTORY/tests].",
)
@click.option("--coverage", is_flag=True, help="List the rules that no case exercised.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
def test_command(directory: Path, cases_dir: Path | None, coverage: bool, fmt: str) -> None:
    """Run the rule test cases; exit 1 when one fails, 2 when the ruleset does not load."""
    try:
        report = run_cases(directory, cases_dir=cases_dir)
    except RulesetError as exc:
        if fmt == "json":
            problems = [problem_dict(p) for p in exc.problems]
            click.echo(json.dumps({"ruleset_problems": problems}, indent=2))
        else:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            click.echo(f"{tally(exc.problems)}; this ruleset cannot go live", err=True)
        raise SystemExit(2) from None
    if fmt == "json":
        click.echo(json.dumps(report_dict(report), indent=2, ensure_ascii=False))
    else:
        click.echo(format_text(report, coverage=coverage))
    raise SystemExit(0 if report.ok else 1)
