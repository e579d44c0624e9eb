"""`rules check`: load errors, plus the warnings of rule_analysis.py; the report, its
text and JSON forms, and the command."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import click

from decision_engine.authoring.rule_analysis import analyse
from decision_engine.config import rules_dir_argument
from decision_engine.errors import Problem, RulesetError, tally
from decision_engine.moments.definitions import compile_moments
from decision_engine.moments.limits import limit_problems
from decision_engine.moments.trial import trial
from decision_engine.ruleset.load import load_ruleset
from decision_engine.ruleset.spec import Ruleset

# -- the report ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What `rules check` found: errors stop a ruleset going live, warnings do not."""

    problems: tuple[Problem, ...]
    """Errors and warnings, sorted by file and line, then notes (such as how many files
    were not checked after one failed to parse)."""
    ruleset: Ruleset | None
    """The loaded ruleset; None when it has errors."""

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")


def check_rules(directory: Path, *, trial_moments: bool = False) -> CheckReport:
    """Load and analyse a rules directory.

    Moments are checked against durable_rules' C limits (moments/limits.py) and, with
    `trial_moments`, exercised in a throwaway process (moments/trial.py), since a crash
    there cannot be caught.

    Raises FileNotFoundError / NotADirectoryError (or another OSError) when the
    directory cannot be read at all: then there is nothing to report on.
    """
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"rules directory not found: {directory}")
    if not directory.is_dir():
        raise NotADirectoryError(f"not a directory: {directory}")
    try:
        ruleset = load_ruleset(directory)
    except RulesetError as exc:
        return CheckReport(_in_file_order(exc.problems), None)
    problems = analyse(ruleset)
    if ruleset.moments:
        limits = limit_problems(compile_moments(ruleset.moments))
        if limits:
            return CheckReport(_in_file_order([*problems, *limits]), None)
        if trial_moments:
            try:
                trial(directory)
            except RulesetError as exc:
                return CheckReport(_in_file_order([*problems, *exc.problems]), None)
    return CheckReport(_in_file_order(problems), ruleset)


def _in_file_order(problems: Iterable[Problem]) -> tuple[Problem, ...]:
    """Errors and warnings by file and line; notes (files not checked) after them."""
    return tuple(sorted(problems, key=lambda p: (p.severity == "note", p.file, p.line, p.column)))


# -- output -------------------------------------------------------------------------------


def format_text(report: CheckReport) -> str:
    """One `file:line:col: severity: message` line per problem, then a summary."""
    lines = [str(p) for p in report.problems]
    if report.ruleset is None:
        lines.append(f"{tally(report.problems)}; this ruleset cannot go live")
    else:
        rs = report.ruleset
        summary = (
            f"ok: ruleset {rs.version} ({rs.label or 'no label'}): {len(rs.offers)} offers, "
            f"{len(rs.routes)} routing rules, {len(rs.policies)} policies"
            + (f", {len(rs.moments)} moments" if rs.moments else "")
            + (f", {len(rs.notices.notices)} notices" if rs.notices else "")
        )
        lines.append(summary + (f"; {tally(report.warnings)}" if report.warnings else ""))
    return "\n".join(lines)


def format_json(report: CheckReport) -> str:
    """`{version, ok, problems: [{file, line, column, severity, message}]}`."""
    return json.dumps(
        {
            "version": report.ruleset.version if report.ruleset else None,
            "ok": not report.errors,
            "problems": [
                {
                    "file": p.file,
                    "line": p.line,
                    "column": p.column,
                    "severity": p.severity,
                    "message": p.message,
                }
                for p in report.problems
            ],
        },
        indent=2,
    )


@click.command(name="check")
@rules_dir_argument()
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json is for editors and CI.",
)
@click.option(
    "--trial/--no-trial",
    "trial_moments",
    default=True,
    show_default=True,
    help="Exercise the moments in a throwaway process (a durable_rules crash cannot be caught).",
)
def check_command(directory: Path, output: str, trial_moments: bool) -> None:
    """Check a rules directory: errors (exit 1) stop it going live; warnings do not.

    Exit 2 when the directory cannot be read at all.
    """
    try:
        report = check_rules(directory, trial_moments=trial_moments)
    except OSError as exc:
        click.echo(f"error: cannot check the rules: {exc}", err=True)
        sys.exit(2)
    click.echo(format_json(report) if output == "json" else format_text(report))
    sys.exit(1 if report.errors else 0)
