"""The GuidanceService servicer: events in (PublishEvents, Guide), guidance out
(WatchGuidance, Guide).

Publishing stores each event in its interaction's stream (store/interactions.py); the
moment processes do the rest. A watch replays the interaction's guidance after the seq it
has, exactly once and in order, then follows it live (guidance_follow.py, one blocking
read for the whole worker) until the end marker: the interaction has ended and its
guidance is all written. At most `max_watches` watches (and Guide calls) are open in a
worker; the next is RESOURCE_EXHAUSTED at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import NoReturn

import grpc

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.errors import (
    DecisionEngineError,
    InteractionStateError,
    InvalidRequestError,
)
from decision_engine.moments.model import InteractionEvent
from decision_engine.server import metrics
from decision_engine.server.guidance_follow import GuidanceFollower, Subscription
from decision_engine.server.interaction_convert import (
    guidance_message,
    interaction_event,
    metric_field,
    publish_request,
)
from decision_engine.server.status import status_for
from decision_engine.store.connection import Connection
from decision_engine.store.interactions import (
    Published,
    guidance_cursor,
    publish_events,
    read_guidance,
)
from decision_engine.vocabulary import id_problem

DEFAULT_MAX_WATCHES = 1000
WATCHES = "watches"
"""The `requests_shed_total` reason of a watch refused because the worker has too many."""
_PAGE = 100
_STATUS = {
    "accepted": pb.PUBLISH_STATUS_ACCEPTED,
    "duplicate": pb.PUBLISH_STATUS_DUPLICATE,
    "held": pb.PUBLISH_STATUS_HELD,
}


class GuidanceService(pb_grpc.GuidanceServiceServicer):
    """Live guidance over the interaction store of one Redis."""

    def __init__(
        self,
        connection: Connection,
        follower: GuidanceFollower,
        *,
        max_watches: int = DEFAULT_MAX_WATCHES,
    ) -> None:
        self._conn = connection
        self._follower = follower
        self.max_watches = max_watches
        self.watches = 0

    async def PublishEvents(
        self, request: pb.PublishEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishEventsResponse:
        try:
            now = time.time()
            events = publish_request(request, now=now)
            published = await self._publish(events, now=now)
        except DecisionEngineError as exc:
            await _refuse(exc, context)
        return pb.PublishEventsResponse(
            events=[
                pb.PublishedEvent(event_id=p.event_id, status=_STATUS[p.status], seq=p.seq)
                for p in published
            ]
        )

    async def WatchGuidance(
        self, request: pb.WatchGuidanceRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Guidance]:
        problem = id_problem(request.interaction_id) if request.interaction_id else "is required"
        if problem is not None:
            await _refuse(InvalidRequestError("interaction_id", problem), context)
        async with self._slot("WatchGuidance", context):
            subscription = Subscription(request.interaction_id)
            try:
                async for message in self._guidance(subscription, request.after_seq):
                    yield message
            except DecisionEngineError as exc:
                await _refuse(exc, context)

    async def Guide(
        self,
        request_iterator: AsyncIterator[pb.InteractionEvent],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.Guidance]:
        async with self._slot("Guide", context):
            messages = aiter(request_iterator)
            try:
                first = await anext(messages)
            except StopAsyncIteration:
                return
            try:
                event = interaction_event(first, now=time.time())
                await self._publish([event], now=time.time())
            except DecisionEngineError as exc:
                await _refuse(exc, context)
            subscription = Subscription(event.interaction_id)
            reader = asyncio.create_task(self._publish_rest(messages, subscription))
            reader.add_done_callback(_retrieve)
            try:
                async for message in self._guidance(subscription, 0):
                    yield message
            except DecisionEngineError as exc:
                await _refuse(exc, context)
            finally:
                reader.cancel()

    async def _publish(self, events: Sequence[InteractionEvent], *, now: float) -> list[Published]:
        published = await publish_events(self._conn, events, now=now)
        for event, result in zip(events, published, strict=True):
            if result.status != "duplicate":
                metrics.EVENTS_RECEIVED.labels(event.kind).inc()
        return published

    async def _publish_rest(
        self, messages: AsyncIterator[pb.InteractionEvent], subscription: Subscription
    ) -> None:
        """A Guide call's further events, published as they come; the first one that
        cannot be ends the call (through the subscription)."""
        interaction_id = subscription.interaction_id
        try:
            async for message in messages:
                event = interaction_event(message, now=time.time())
                if event.interaction_id != interaction_id:
                    raise InvalidRequestError(
                        "event.interaction_id",
                        f"must be {interaction_id}, the interaction this Guide call is for",
                    )
                await self._publish([event], now=time.time())
        except (DecisionEngineError, grpc.aio.AbortError) as exc:
            subscription.fail(exc)

    async def _guidance(
        self, subscription: Subscription, after_seq: int
    ) -> AsyncIterator[pb.Guidance]:
        """Replay what is stored after `after_seq`, then follow, until the end marker."""
        interaction_id = subscription.interaction_id
        cursor = guidance_cursor(after_seq)
        while True:
            entries = await read_guidance(self._conn, interaction_id, after=cursor, count=_PAGE)
            for entry in entries:
                if entry.record is None:
                    return
                yield guidance_message(entry.record)
                cursor = entry.entry_id
            failure = subscription.failure()
            if failure is not None:
                raise failure
            if len(entries) < _PAGE:
                break
        self._follower.activate(subscription, cursor)
        try:
            while True:
                for entry in await subscription.next():
                    if entry.record is None:
                        return
                    yield guidance_message(entry.record)
        finally:
            self._follower.cancel(subscription)

    @contextlib.asynccontextmanager
    async def _slot(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """One of the worker's `max_watches`, or RESOURCE_EXHAUSTED at once."""
        if self.watches >= self.max_watches:
            metrics.REQUESTS_SHED.labels(method, WATCHES).inc()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"at most {self.max_watches} guidance watches are open in this worker; retry "
                "after a backoff, or on another replica",
            )
        self.watches += 1
        metrics.WATCHES_OPEN.inc()
        try:
            # The watch is open: the client knows it before any guidance exists.
            await context.send_initial_metadata(())
            yield
        finally:
            self.watches -= 1
            metrics.WATCHES_OPEN.dec()


async def _refuse(exc: BaseException, context: grpc.aio.ServicerContext) -> NoReturn:
    """Answer the call with the error's status (counted), once, here."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc  # already answered (the gate refused a message of the stream)
    if not isinstance(exc, DecisionEngineError):
        raise exc
    if isinstance(exc, InvalidRequestError):
        metrics.INVALID_REQUESTS.labels(metric_field(exc.field)).inc()
    elif isinstance(exc, InteractionStateError):
        metrics.EVENTS_REFUSED.labels(exc.reason).inc()
    code, message = status_for(exc)
    await context.abort(code, message)
    raise AssertionError("abort returned")  # pragma: no cover


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
