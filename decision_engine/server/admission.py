"""Admission control: what a worker takes on, and what it turns away at once.

A worker is one event loop on one core. Unbounded, an overload turned into answers
seconds late (3x the sustainable rate: p50 11 s), most of them to callers that had
given up, and profile reads that ran out of their budget waiting for CPU. Two bounds
keep a worker's latency flat instead (figures in README, "Under load"):

- calls waiting for the worker's event loop: gRPC's core holds a call until the loop
  asks for the next one, one at a time, so under CPU overload the queue forms there,
  before any Python runs. The core refuses calls beyond `ServerLimits.max_queued`
  (per method) itself, within milliseconds, without costing the loop anything; it
  answers them CANCELLED (limits.py sets it up).
- calls being served: `Admission` below lets at most `max_in_flight` unary calls of
  the guarded services (DecisionService, GuidanceService) run at once in this process
  and answers the next one RESOURCE_EXHAUSTED with a message, counted in requests_shed_total{reason=
  "in_flight"}; that bound is reached when calls wait on I/O (Redis slow), not on CPU.
  A call that reaches the servicer with less than `min_deadline_s` left (its caller
  has given up, or is about to) is not served either: DEADLINE_EXCEEDED, counted with
  reason "deadline". Streams (a guidance watch lasts as long as its interaction) pass
  the deadline check only; their own bound is the worker's watches.

Health checks, reflection and the admin service are never shed here: they are how
operators and load balancers see an overloaded worker.

Why not `grpc.aio.server(maximum_concurrent_rpcs=...)`: it sheds health checks too,
with a message and a count of its own; and like this counter it only sees calls the
loop has taken, so alone it does nothing against CPU overload.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

from decision_engine.server import metrics

Behaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]

IN_FLIGHT = "in_flight"
DEADLINE = "deadline"


class Admission(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Sheds the unary calls of `services` beyond `max_in_flight` in this process."""

    def __init__(
        self, *, max_in_flight: int, min_deadline_s: float, services: Iterable[str]
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self.min_deadline_s = min_deadline_s
        self.in_flight = 0
        """Calls of the guarded services being served now."""
        self._prefixes = tuple(f"/{name}/" for name in services)
        # id(handler found) -> (that handler, kept alive so the id stays its own; its
        # admitted version). gRPC makes a method's handler once, so this stays small.
        self._admitted: dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        known = self._admitted.get(id(handler))
        if known is not None:
            return known[1]
        method: str = details.method
        if not method.startswith(self._prefixes):
            return handler
        if handler.unary_unary is not None:
            admitted = handler._replace(unary_unary=self._admit(method, handler.unary_unary))
        elif handler.unary_stream is not None:
            admitted = handler._replace(
                unary_stream=self._admit_stream(method, handler.unary_stream)
            )
        elif handler.stream_stream is not None:
            admitted = handler._replace(
                stream_stream=self._admit_stream(method, handler.stream_stream)
            )
        else:
            return handler
        if len(self._admitted) < 256:  # bounded even if handlers were made per call
            self._admitted[id(handler)] = (handler, admitted)
        return admitted

    def _admit_stream(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        """A streaming `behaviour` behind the deadline check only: a watch lasts as long as
        its interaction, so streams are bounded by their own count (guidance_service.py),
        not by the calls in flight."""
        if not inspect.isasyncgenfunction(behaviour):
            return behaviour  # answers with context.write: not ours to wrap
        name = method.rsplit("/", 1)[-1]
        shed_deadline = metrics.REQUESTS_SHED.labels(name, DEADLINE)

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._check_deadline(context, shed_deadline)
            async for item in behaviour(request, context):
                yield item

        return admitted

    async def _check_deadline(self, context: grpc.aio.ServicerContext, shed: Any) -> None:
        """Abort a call whose caller has too little time left for it to be worth serving."""
        remaining = context.time_remaining()
        if remaining is not None and remaining < self.min_deadline_s:
            shed.inc()
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"not served: {max(remaining, 0.0) * 1e3:.1f} ms of the deadline left "
                "when the server got to the call",
            )

    def _admit(self, method: str, behaviour: Behaviour) -> Behaviour:
        """`behaviour`, behind the deadline check and the in-flight bound."""
        name = method.rsplit("/", 1)[-1]
        shed_in_flight = metrics.REQUESTS_SHED.labels(name, IN_FLIGHT)
        shed_deadline = metrics.REQUESTS_SHED.labels(name, DEADLINE)
        full = (
            f"server overloaded: {self.max_in_flight} calls in flight in this worker; "
            "retry after a backoff, or on another replica"
        )

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._check_deadline(context, shed_deadline)
            if self.in_flight >= self.max_in_flight:
                shed_in_flight.inc()
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, full)
            self.in_flight += 1
            try:
                return await behaviour(request, context)
            finally:
                self.in_flight -= 1

        return admitted
