"""The one gate every RPC passes: the message parses, and the caller may make the call.

A gRPC interceptor replaces each method's handler once with one that parses the
request itself (a message that does not parse is INVALID_ARGUMENT, counted, logged
at debug, never a traceback), authenticates the caller and checks the permission
the call needs. Health checks (and reflection, when on) need no credential; every
other method does, and a method this table does not know needs `admin`: new RPCs
are closed until someone says who may call them. Streaming methods, either way, pass
the same checks.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from decision_engine.errors import AccessError
from decision_engine.server import metrics
from decision_engine.server.auth import (
    ADMIN,
    DECIDE,
    EXPLAIN,
    NOTIFY,
    OUTCOME,
    PUBLISH,
    WATCH,
    Authenticator,
)
from decision_engine.server.status import status_for
from decision_engine.server.throttle import Throttle

log = logging.getLogger(__name__)

_DECISION = "/decision.v1.DecisionService/"
_GUIDANCE = "/decision.v1.GuidanceService/"
_NOTICES = "/decision.v1.NoticeService/"
_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
_REFLECTION_PREFIXES = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
_UNEXPECTED_LOG_EVERY_S = 10.0

Need = Callable[[Any], tuple[str, str]]
"""Request (None for a client stream) → (permission, what the caller is trying to do)."""

NEEDS: dict[str, Need] = {
    _DECISION + "Decide": lambda r: (
        (EXPLAIN, "ask for explanations (they show profile values)")
        if r.explain
        else (DECIDE, "call Decide")
    ),
    _DECISION + "RecordOutcome": lambda _: (OUTCOME, "record outcomes"),
    _DECISION + "Ping": lambda _: (DECIDE, "call Ping"),
    _GUIDANCE + "PublishEvents": lambda _: (PUBLISH, "publish interaction events"),
    _GUIDANCE + "WatchGuidance": lambda _: (WATCH, "watch guidance"),
    # Publishes and watches: every role with `watch` also has `publish` (auth.py).
    _GUIDANCE + "Guide": lambda _: (WATCH, "publish events and watch guidance (Guide)"),
    _NOTICES + "PublishEvent": lambda _: (NOTIFY, "publish business events"),
    _NOTICES + "PublishBusinessEvents": lambda _: (NOTIFY, "publish business events"),
    _NOTICES + "RecordNoticeReceipt": lambda _: (NOTIFY, "record notice receipts"),
}
_ADMIN_NEED: Need = lambda _: (ADMIN, "call admin methods")  # noqa: E731


class _Malformed:
    """Stands in for a request that did not parse, so the handler can answer for it."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _safe(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except (DecodeError, ValueError, RecursionError) as exc:
            return _Malformed(str(exc) or type(exc).__name__)

    return parse


class Gate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Parse, authenticate, authorize: once per call, before any servicer runs."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        reflection_open: bool = True,
        closed: Mapping[str, str] | None = None,
    ) -> None:
        self._auth = authenticator
        self._closed = dict(closed or {})
        """Method prefix → why its calls are refused (FAILED_PRECONDITION) after the
        caller is checked: services this deployment cannot run."""
        self._open = _OPEN_PREFIXES + (_REFLECTION_PREFIXES if reflection_open else ())
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}
        self._unexpected_log = Throttle(every_s=_UNEXPECTED_LOG_EVERY_S)
        for method in NEEDS:  # exported at 0 from the start, for rate() and alerts
            metrics.INTERNAL_ERRORS.labels(method.rsplit("/", 1)[-1])

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        try:
            return self._handlers[method]
        except KeyError:
            pass
        handler = await continuation(handler_call_details)
        wrapped = None if handler is None else self._wrap(method, handler)
        if handler is not None:
            # Only methods that exist are kept: the table is bounded by the services.
            self._handlers[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        is_open = method.startswith(self._open)
        need = NEEDS.get(method, _ADMIN_NEED)
        name = method.rsplit("/", 1)[-1]
        closed = next(
            (why for prefix, why in self._closed.items() if method.startswith(prefix)), ""
        )
        replaced: dict[str, Any] = {"request_deserializer": _safe(handler.request_deserializer)}
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                replaced[kind] = self._guard(name, behavior, need, is_open, kind, closed)
        return handler._replace(**replaced)

    async def _check(
        self,
        name: str,
        request: Any,
        need: Need,
        is_open: bool,
        context: grpc.aio.ServicerContext,
        closed: str = "",
    ) -> None:
        """Abort unless `request` parsed (None: a stream, checked per message), the
        caller may make the call and the service is not `closed` (why it is)."""
        if isinstance(request, _Malformed):
            metrics.MALFORMED_REQUESTS.labels(name).inc()
            log.debug("%s: request does not parse: %s", name, request.reason)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request: not a valid message for {name}: {request.reason}",
            )
        if is_open:
            return
        try:
            caller = self._auth.caller(_authorization(context))
            permission, what = need(request)
            caller.require(permission, what)
        except AccessError as exc:
            metrics.AUTH_FAILURES.labels(name, exc.reason).inc()
            code, message = status_for(exc)
            await context.abort(code, message)
        if closed:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, closed)

    def _guard(
        self, name: str, behavior: Any, need: Need, is_open: bool, kind: str, closed: str
    ) -> Callable[..., Any]:
        check = self._check
        streamed_in = kind.startswith("stream_")
        # Answers by yielding (an async generator), or returns / writes with context.write.
        yields = kind.endswith("_stream") and inspect.isasyncgenfunction(behavior)
        call = behavior
        if streamed_in:
            # The caller is checked once, before the first message; then each message must
            # parse. (A servicer reading with context.read() would bypass the latter.)
            async def parsed(messages: Any, context: grpc.aio.ServicerContext) -> Any:
                async for message in messages:
                    if isinstance(message, _Malformed):
                        await check(name, message, need, True, context)
                    yield message

            def call(messages: Any, context: grpc.aio.ServicerContext) -> Any:
                return behavior(parsed(messages, context), context)

        if not yields:

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(name, None if streamed_in else request, need, is_open, context, closed)
                try:
                    return await call(request, context)
                except (grpc.aio.AbortError, grpc.aio.UsageError):
                    raise
                except Exception:
                    self._unexpected(name)
                    await context.abort(grpc.StatusCode.INTERNAL, "internal error")

            return unary

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(name, None if streamed_in else request, need, is_open, context, closed)
            async for item in call(request, context):
                yield item

        return streaming

    def _unexpected(self, name: str) -> None:
        """A bug, not a client error: log the traceback, but not once per request."""
        metrics.INTERNAL_ERRORS.labels(name).inc()
        if self._unexpected_log.ready():
            log.exception("%s failed (logged at most every %gs)", name, _UNEXPECTED_LOG_EVERY_S)


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None
