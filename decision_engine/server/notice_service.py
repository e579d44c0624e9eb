"""The NoticeService servicer: business events in, provider receipts in.

Publishing checks each event against the served ruleset's declared events and stores it
once (by event id) on the durable Redis's events stream; the notice processes
(notice_loop.py) decide and queue the notices. A receipt updates the customer's notice
log, which the next Decide reads.
"""

from __future__ import annotations

import time
from typing import NoReturn

import grpc

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.decide.notices import BusinessEvent
from decision_engine.errors import DecisionEngineError, InvalidRequestError
from decision_engine.server import metrics
from decision_engine.server.interaction_convert import metric_field
from decision_engine.server.notice_convert import business_event, business_events, notice_receipt
from decision_engine.server.service import ActiveRuleset
from decision_engine.server.status import status_for
from decision_engine.store.connection import Connection
from decision_engine.store.notice_log import record_receipt
from decision_engine.store.notices import ACCEPTED, publish

_STATUS = {"accepted": pb.EVENT_STATUS_ACCEPTED, "duplicate": pb.EVENT_STATUS_DUPLICATE}


class NoticeService(pb_grpc.NoticeServiceServicer):
    """Business events onto the durable Redis; receipts onto the customer's notice log."""

    def __init__(
        self,
        rules: ActiveRuleset,
        *,
        decision: Connection,
        durable: Connection,
    ) -> None:
        self._rules = rules
        self._decision = decision
        self._durable = durable

    async def PublishEvent(
        self, request: pb.BusinessEvent, context: grpc.aio.ServicerContext
    ) -> pb.PublishBusinessEventResponse:
        try:
            now = time.time()
            event = business_event(request, self._rules.current, now=now)
            (status,) = await self._publish([event], now=now)
        except DecisionEngineError as exc:
            await _refuse(exc, context)
        return pb.PublishBusinessEventResponse(event_id=event.event_id, status=_STATUS[status])

    async def PublishBusinessEvents(
        self, request: pb.PublishBusinessEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishBusinessEventsResponse:
        try:
            now = time.time()
            events = business_events(request, self._rules.current, now=now)
            statuses = await self._publish(events, now=now)
        except DecisionEngineError as exc:
            await _refuse(exc, context)
        return pb.PublishBusinessEventsResponse(
            events=[
                pb.PublishBusinessEventResponse(event_id=e.event_id, status=_STATUS[s])
                for e, s in zip(events, statuses, strict=True)
            ]
        )

    async def RecordNoticeReceipt(
        self, request: pb.NoticeReceipt, context: grpc.aio.ServicerContext
    ) -> pb.RecordNoticeReceiptResponse:
        try:
            key, status, provider_ref = notice_receipt(request)
            await record_receipt(
                self._decision, self._durable, key, status, provider_ref, now=time.time()
            )
        except DecisionEngineError as exc:
            await _refuse(exc, context)
        metrics.NOTICE_RECEIPTS.labels(status).inc()
        return pb.RecordNoticeReceiptResponse()

    async def _publish(self, events: list[BusinessEvent], *, now: float) -> list[str]:
        statuses = await publish(self._durable, events, now=now)
        for event, status in zip(events, statuses, strict=True):
            metrics.BUSINESS_EVENTS.labels(event.type, status).inc()
            if status == ACCEPTED and event.audience is not None:
                metrics.AUDIENCE_EVENTS.labels(event.type).inc()
        return statuses


async def _refuse(exc: DecisionEngineError, context: grpc.aio.ServicerContext) -> NoReturn:
    """Answer the call with the error's status (counted), once, here."""
    if isinstance(exc, InvalidRequestError):
        metrics.INVALID_REQUESTS.labels(metric_field(exc.field)).inc()
    code, message = status_for(exc)
    await context.abort(code, message)
    raise AssertionError("abort returns only by raising")  # pragma: no cover
