"""A simulation report as plain JSON-ready data (`simulate --json`)."""

from __future__ import annotations

from typing import Any

from decision_engine.authoring.figures import iso_instant
from decision_engine.authoring.results import Diff, RunSummary, Share, SimulationReport


def report_json(report: SimulationReport) -> dict[str, Any]:
    """The report as plain JSON-ready data."""
    out: dict[str, Any] = {
        "now": iso_instant(report.now),
        "population": {
            "source": report.population,
            "customers": report.customers,
            "bad_lines": [
                {"file": b.file, "line": b.line, "reason": b.reason} for b in report.bad_lines
            ],
            "warnings": list(report.warnings),
        },
        "new": _outcome_json(report.new),
        "baseline": _outcome_json(report.baseline) if report.baseline else None,
        "diff": _diff_json(report.diff) if report.diff else None,
    }
    return out


def _outcome_json(outcome: RunSummary) -> dict[str, Any]:
    return {
        "rules_dir": outcome.rules_dir,
        "version": outcome.version,
        "label": outcome.label,
        "decisions": outcome.decisions,
        "seconds": round(outcome.seconds, 6),
        "decisions_per_second": round(outcome.decisions_per_second, 1),
        "queues": [_share_json(s) for s in outcome.queues],
        "routing_rules": [_share_json(s) for s in outcome.routing_rules],
        "offers": [_share_json(s) for s in outcome.offers],
        "no_offer": outcome.no_offer,
        "expected_value": {
            "first_offer": {"total": outcome.first_offer_ev, "mean": outcome.first_offer_ev_mean},
            "all_offers": {"total": outcome.all_offers_ev, "mean": outcome.all_offers_ev_mean},
        },
    }


def _share_json(share: Share) -> dict[str, Any]:
    out: dict[str, Any] = {"id": share.key, "count": share.count, "share": share.share}
    if share.title:
        out["title"] = share.title
    return out


def _diff_json(diff: Diff) -> dict[str, Any]:
    return {
        "changed": diff.changed,
        "routing_changed": diff.routing_changed,
        "offers_changed": diff.offers_changed,
        "changed_customers": list(diff.changed_customers),
        "transitions": [
            {"from": t.before, "to": t.after, "count": t.count} for t in diff.transitions
        ],
        "offers": [
            {
                "id": d.offer_id,
                "title": d.title,
                "baseline": d.baseline,
                "new": d.new,
                "gained": d.gained,
                "lost": d.lost,
            }
            for d in diff.offers
        ],
        "top_changes": [
            {"baseline": list(c.before), "new": list(c.after), "count": c.count}
            for c in diff.top_changes
        ],
        "routing_rules": [
            {"id": r.rule_id, "baseline": r.baseline, "new": r.new} for r in diff.routing_rules
        ],
    }
