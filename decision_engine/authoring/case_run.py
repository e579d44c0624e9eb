"""Run rule test cases through the same decide() as the server, and check each decision."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from pathlib import Path

from decision_engine.authoring.case_model import (
    CASES_SUBDIR,
    DEFAULT_ROUTE,
    CaseReport,
    CaseResult,
    Coverage,
    Expectation,
    Failure,
    MomentCase,
    NoticeCase,
    OffersExpectation,
    RoutingExpectation,
    Unexercised,
)
from decision_engine.authoring.case_read import case_files, read_cases
from decision_engine.authoring.moment_case_run import check_guidance, run_moment_case
from decision_engine.authoring.notice_case_run import check_notices, run_notice_case
from decision_engine.decide.engine import decide
from decision_engine.decide.notices import SUPPRESSED
from decision_engine.decide.values import Decision, Explanation
from decision_engine.errors import Problem, Where
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled


def run_cases(rules_dir: Path, *, cases_dir: Path | None = None) -> CaseReport:
    """Run every case in `cases_dir` (default `<rules_dir>/tests`) against the ruleset.

    Raises RulesetError when the ruleset itself does not load; problems in case files
    are results, so one bad file does not hide the others.
    """
    ruleset = load_compiled(rules_dir)
    cases_dir = cases_dir if cases_dir is not None else rules_dir / CASES_SUBDIR
    results: list[CaseResult] = []
    decisions: list[Decision] = []
    detected: set[str] = set()
    noticed: set[str] = set()
    files = case_files(cases_dir)
    if not files:
        # A rule change "proven" by no case at all must not look like a pass.
        message = f"no test cases: add .yaml case files to {cases_dir}"
        results.append(_unreadable(cases_dir, message))
    names: dict[str, Where] = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            results.append(_unreadable(path, f"cannot read the case file: {exc}"))
            continue
        for item in read_cases(path, text, ruleset, names):
            if isinstance(item, CaseResult):
                results.append(item)
                continue
            if isinstance(item, MomentCase):
                found = run_moment_case(ruleset, item)
                detected.update(d.moment_id for d in found)
                failures = tuple(check_guidance(item.expect, found, item.now))
                results.append(CaseResult(item.name, item.where, failures))
                continue
            if isinstance(item, NoticeCase):
                plans = run_notice_case(ruleset, item)
                noticed.update(p.notice_id for p in plans if p.status != SUPPRESSED)
                results.append(CaseResult(item.name, item.where, tuple(check_notices(item, plans))))
                continue
            decision = decide(
                ruleset,
                state=None if item.degraded else item.state,
                context=item.context,
                now=item.now,
                decision_id=f"test:{item.where.file}:{item.where.line}",
                interaction_id=item.interaction_id,
                max_offers=item.max_offers,
                explain=True,
                degraded=item.degraded,
                exhausted=item.caps_spent,
            )
            decisions.append(decision)
            failures = tuple(_check(item.expect, decision, ruleset))
            results.append(CaseResult(item.name, item.where, failures))
    return CaseReport(
        ruleset_version=ruleset.version,
        ruleset_label=ruleset.source.label,
        cases_dir=cases_dir,
        results=tuple(results),
        coverage=_coverage(ruleset, decisions, detected, noticed),
    )


def _unreadable(path: Path, message: str) -> CaseResult:
    return CaseResult(
        path.name, Where(str(path), 0, 0), problems=(Problem.at(str(path), 0, 0, message),)
    )


def _coverage(
    ruleset: CompiledRuleset, decisions: list[Decision], detected: set[str], noticed: set[str]
) -> Coverage:
    """Exercised: applied (eligible, for an offer) in at least one case's explanation;
    a moment: detected in at least one moment case; a notice: sent or held in at least
    one notice case."""
    hit = {(e.kind, e.rule_id) for d in decisions for e in d.explanations if e.matched}
    # The default route has no explanation of its own; being routed to it exercises it.
    if any(d.routing.rule_id == DEFAULT_ROUTE for d in decisions):
        hit.add(("routing", DEFAULT_ROUTE))
    # A contact policy (or cap) is exercised when it kept a candidate offer out.
    hit |= {("contact policy", policy_id) for d in decisions for policy_id in d.suppressed_by}
    hit |= {("moment", moment_id) for moment_id in detected}
    hit |= {("notice", notice_id) for notice_id in noticed}
    source = ruleset.source
    every = [("routing", DEFAULT_ROUTE, source.default_route.where)]
    # Routes are held in precedence order; list them as they read in the files.
    routes = sorted(source.routes, key=lambda r: (r.where.file, r.where.line))
    every += [("routing", r.id, r.where) for r in routes]
    every += [("offer", o.id, o.where) for o in source.offers]
    every += [("policy", p.id, p.where) for p in source.policies]
    every += [("contact policy", p.id, p.where) for p in source.contact_policies]
    every += [("moment", m.id, m.where) for m in source.moments]
    every += [("notice", n.id, n.where) for n in (source.notices.notices if source.notices else ())]
    missed = tuple(Unexercised(k, i, w) for k, i, w in every if (k, i) not in hit)
    return Coverage(len(every), missed)


# -- checking a decision against a case -----------------------------------------------------


def _check(expect: Expectation, decision: Decision, ruleset: CompiledRuleset) -> Iterator[Failure]:
    explained = {(e.kind, e.rule_id): e for e in decision.explanations}
    if expect.routing is not None:
        yield from _check_routing(expect.routing, decision, ruleset, explained)
    if expect.offers is not None:
        yield from _check_offers(expect.offers, decision, explained)
    ids = [o.offer_id for o in decision.offers]
    for offer_id, texts in expect.script_contains:
        offer = next((o for o in decision.offers if o.offer_id == offer_id), None)
        what = f"script_contains.{offer_id}"
        if offer is None:
            why = _offer_why(offer_id, decision, explained)
            for text in texts:
                yield Failure(what, _quote(text), f"no {offer_id} offer in {_list(ids)}", why)
            continue
        for text in texts:
            if text not in offer.script:
                yield Failure(what, _quote(text), _quote(offer.script))
    if expect.profile_found is not None and expect.profile_found != decision.profile_found:
        yield Failure("profile_found", _yes(expect.profile_found), _yes(decision.profile_found))
    if expect.degraded is not None and expect.degraded != decision.degraded:
        yield Failure("degraded", _yes(expect.degraded), _yes(decision.degraded))


def _check_routing(
    expect: RoutingExpectation,
    decision: Decision,
    ruleset: CompiledRuleset,
    explained: dict[tuple[str, str], Explanation],
) -> Iterator[Failure]:
    routing = decision.routing
    chosen = f"routed by {routing.rule_id}: {routing.reason}"
    if expect.queue is not None and expect.queue != routing.queue:
        candidates = [r.id for r in ruleset.routes if r.queue == expect.queue]
        if ruleset.source.default_route.queue == expect.queue:
            candidates.append(DEFAULT_ROUTE)
        why = "; ".join(_route_why(c, explained, ruleset, routing.rule_id) for c in candidates)
        why = why or chosen
        yield Failure("routing.queue", expect.queue, routing.queue, why)
    if expect.priority is not None and expect.priority != routing.priority:
        yield Failure("routing.priority", str(expect.priority), str(routing.priority), chosen)
    if expect.skip_ivr is not None and expect.skip_ivr != routing.skip_ivr:
        yield Failure("routing.skip_ivr", _yes(expect.skip_ivr), _yes(routing.skip_ivr), chosen)
    if expect.rule is not None and expect.rule != routing.rule_id:
        why = _route_why(expect.rule, explained, ruleset, routing.rule_id)
        yield Failure("routing.rule", expect.rule, routing.rule_id, why)


def _route_why(
    rule_id: str,
    explained: dict[tuple[str, str], Explanation],
    ruleset: CompiledRuleset,
    winner: str,
) -> str:
    """Why `rule_id` did not route: its failing condition, or for the default route the
    rule that won and its `when`."""
    if rule_id == DEFAULT_ROUTE:
        won = next((r for r in ruleset.routes if r.id == winner), None)
        terms = [c.text for c in won.when] if won is not None else []
        when = " and ".join(f"({t})" if len(terms) > 1 and " or " in t else t for t in terms)
        return f"default: routing rule {winner} applied" + (f" ({when})" if when else "")
    e = explained.get(("routing", rule_id))
    return f"{rule_id}: {e.detail}" if e is not None else ""


def _check_offers(
    expect: OffersExpectation,
    decision: Decision,
    explained: dict[tuple[str, str], Explanation],
) -> Iterator[Failure]:
    ids = [o.offer_id for o in decision.offers]
    got = _list(ids)
    missing = [i for i in expect.include if i not in ids]
    if missing:
        why = "; ".join(_offer_why(i, decision, explained) for i in missing)
        yield Failure("offers.include", f"{', '.join(missing)} among the offers", got, why)
    present = [i for i in expect.exclude if i in ids]
    if present:
        yield Failure("offers.exclude", f"no {', '.join(present)}", got)
    if expect.first is not None and (not ids or ids[0] != expect.first):
        why = _offer_why(expect.first, decision, explained)
        yield Failure("offers.first", expect.first, ids[0] if ids else "no offers", why)
    if expect.order is not None and tuple(ids) != expect.order:
        why = "; ".join(_offer_why(i, decision, explained) for i in expect.order)
        yield Failure("offers.order", _list(expect.order), got, why)
    if expect.count is not None and expect.count != len(ids):
        yield Failure("offers.count", str(expect.count), f"{len(ids)} {got}")
    banned = set(expect.categories_exclude)
    offending = [f"{o.offer_id} ({o.category})" for o in decision.offers if o.category in banned]
    if offending:
        cats = ", ".join(c for c in expect.categories_exclude if c in banned)
        yield Failure("offers.categories_exclude", f"no {cats} offers", _list(offending))


def _offer_why(
    offer_id: str, decision: Decision, explained: dict[tuple[str, str], Explanation]
) -> str:
    e = explained.get(("offer", offer_id))
    if e is None:
        return ""
    if not e.matched:
        return f"{offer_id}: {e.detail}"
    position = next((n for n, o in enumerate(decision.offers, 1) if o.offer_id == offer_id), 0)
    if position:
        return f"{offer_id}: offer #{position}, {e.detail}"
    return f"{offer_id}: eligible ({e.detail}) but not in the top {len(decision.offers)}"


def _list(items: Collection[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _yes(value: bool) -> str:
    return "true" if value else "false"
