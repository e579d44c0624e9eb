"""The one place where engine errors become gRPC status codes."""

from __future__ import annotations

import grpc

from decision_engine.errors import (
    DecisionEngineError,
    DecisionNotFoundError,
    InteractionStateError,
    InvalidRequestError,
    NoticeNotFoundError,
    PermissionDeniedError,
    StoreError,
    UnauthenticatedError,
)


def status_for(exc: DecisionEngineError) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for an engine error."""
    if isinstance(exc, InvalidRequestError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, DecisionNotFoundError | NoticeNotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, InteractionStateError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, UnauthenticatedError):
        return grpc.StatusCode.UNAUTHENTICATED, str(exc)
    if isinstance(exc, PermissionDeniedError):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    if isinstance(exc, StoreError):
        return grpc.StatusCode.UNAVAILABLE, f"{exc.store} unavailable: {exc}"
    return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
