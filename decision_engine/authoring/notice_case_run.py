"""Run notice cases through the same plan_notices() as the server, and check the plans.

The event happens at the case's `now`; what the customer was already sent is the case's
`notices_sent`, so a case always plans the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime

from decision_engine.authoring.case_model import Failure, NoticeCase, NoticeExpectation
from decision_engine.decide.notices import HELD, SEND, SUPPRESSED, NoticePlan, plan_notices
from decision_engine.ruleset.compiled import CompiledRuleset


def run_notice_case(ruleset: CompiledRuleset, case: NoticeCase) -> list[NoticePlan]:
    """One plan per notice on the case's event type, in file order."""
    return plan_notices(ruleset, case.event, case.profile, case.sent, now=case.now)


def check_notices(case: NoticeCase, plans: Sequence[NoticePlan]) -> Iterator[Failure]:
    """Failures of the expected notices (exact, in order) and of the expected suppressions."""
    expect = case.expect
    out = [p for p in plans if p.status != SUPPRESSED]
    by_id = {p.notice_id: p for p in plans}
    if expect.notices is not None:
        wanted = [n.notice for n in expect.notices]
        got = [p.notice_id for p in out]
        if wanted != got:
            why = "; ".join(_why(p) for p in plans if p.notice_id in wanted or p in out)
            yield Failure("notices", _list(wanted), _list([_sent(p) for p in out]), why)
        else:
            for want, planned in zip(expect.notices, out, strict=True):
                yield from _check_one(want, planned)
    for notice_id, reason in expect.suppressed:
        plan = by_id.get(notice_id)
        what = f"suppressed.{notice_id}"
        if plan is None:  # the reader made sure it reacts to this event: cannot happen
            yield Failure(what, reason, "not planned")
        elif plan.status != SUPPRESSED:
            yield Failure(what, f"suppressed ({reason})", _sent(plan), _why(plan))
        elif plan.reason != reason:
            yield Failure(what, reason, plan.reason, _why(plan))


def _check_one(want: NoticeExpectation, plan: NoticePlan) -> Iterator[Failure]:
    what = f"notices.{want.notice}"
    if want.channel is not None and want.channel != plan.channel:
        yield Failure(f"{what}.channel", want.channel, plan.channel, _why(plan))
    if want.status is not None and want.status != plan.status:
        yield Failure(f"{what}.status", want.status, plan.status, _why(plan))
    if want.held_until is not None and plan.status == HELD:
        actual = datetime.fromtimestamp(plan.not_before, want.held_until.tzinfo)
        if abs(plan.not_before - want.held_until.timestamp()) > 1e-6:
            expected = want.held_until.isoformat()
            yield Failure(f"{what}.held_until", expected, actual.isoformat(), _why(plan))
    for text in want.text_contains:
        if text not in plan.text:
            yield Failure(f"{what}.text_contains", _quote(text), _quote(plan.text))
    for text in want.subject_contains:
        if text not in plan.subject:
            got = _quote(plan.subject) if plan.subject else f"no subject ({plan.channel})"
            yield Failure(f"{what}.subject_contains", _quote(text), got)


def _sent(plan: NoticePlan) -> str:
    """How a plan reads in a failure: `payment_failed by email`, `x held (sms)`."""
    if plan.status == SEND:
        return f"{plan.notice_id} by {plan.channel}"
    if plan.status == HELD:
        return f"{plan.notice_id} held ({plan.channel})"
    return f"{plan.notice_id} suppressed ({plan.reason})"


def _why(plan: NoticePlan) -> str:
    if plan.status == SEND:
        urgent = ", urgent" if plan.urgent else ""
        return f"{plan.notice_id}: sent at once by {plan.channel}{urgent}"
    if plan.status == HELD:
        return f"{plan.notice_id}: {plan.detail}"
    return f"{plan.notice_id}: {plan.reason}: {plan.detail}"


def _list(items: Sequence[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
