"""The outcome of running rule test cases, as text for a person or as plain data."""

from __future__ import annotations

import math
from typing import Any

from decision_engine.authoring.case_model import DEFAULT_ROUTE, CaseReport
from decision_engine.errors import Problem, Where

_KIND_LABELS = {
    "routing": "routing rule",
    "offer": "offer",
    "policy": "policy",
    "contact policy": "contact policy",
    "moment": "moment",
    "notice": "notice",
}


def format_text(report: CaseReport, *, coverage: bool = False) -> str:
    """Test-runner style: one line per case, readable diffs, the summary on the last line."""
    label = f" ({report.ruleset_label})" if report.ruleset_label else ""
    lines = [f"ruleset {report.ruleset_version}{label}: cases in {report.cases_dir}"]
    for result in report.results:
        lines.append(f"{result.status.upper()} {result.name} ({_at(result.where)})")
        for problem in result.problems:
            lines.append(f"  {problem}" if problem.line else f"  {problem.file}: {problem.message}")
        for failure in result.failures:
            lines.append(f"  {failure}")
            if failure.why:
                lines.append(f"    why: {failure.why}")
    if coverage:
        cov = report.coverage
        lines.append("")
        lines.append(
            f"coverage: {cov.exercised} of {cov.total} rules exercised ({math.floor(cov.percent)}%)"
        )
        if cov.unexercised:
            lines.append("  not exercised by any case:")
        for item in cov.unexercised:
            label = "default route" if item.rule_id == DEFAULT_ROUTE else _KIND_LABELS[item.kind]
            lines.append(f"    {label} {item.rule_id} ({_at(item.where)})")
    lines.append(f"{report.passed} passed, {report.failed} failed")
    return "\n".join(lines)


def _at(where: Where) -> str:
    """file:line, or the file alone for a problem with the whole file."""
    return f"{where.file}:{where.line}" if where.line else where.file


def report_dict(report: CaseReport) -> dict[str, Any]:
    """The report as plain data (for --format json)."""
    cov = report.coverage
    return {
        "ruleset_version": report.ruleset_version,
        "ruleset_label": report.ruleset_label,
        "cases_dir": str(report.cases_dir),
        "passed": report.passed,
        "failed": report.failed,
        "cases": [
            {
                "name": r.name,
                "file": r.where.file,
                "line": r.where.line,
                "status": r.status,
                "failures": [
                    {"what": f.what, "expected": f.expected, "actual": f.actual, "why": f.why}
                    for f in r.failures
                ],
                "problems": [problem_dict(p) for p in r.problems],
            }
            for r in report.results
        ],
        "coverage": {
            "total": cov.total,
            "exercised": cov.exercised,
            "percent": round(cov.percent, 1),
            "unexercised": [
                {"kind": u.kind, "id": u.rule_id, "file": u.where.file, "line": u.where.line}
                for u in cov.unexercised
            ],
        },
    }


def problem_dict(problem: Problem) -> dict[str, Any]:
    return {
        "file": problem.file,
        "line": problem.line,
        "column": problem.column,
        "message": problem.message,
    }
