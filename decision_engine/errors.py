"""Errors the engine raises on purpose.

    DecisionEngineError
    ├── RulesetError              a rule file is wrong; carries every problem found
    ├── InvalidRequestError       a client sent something we cannot decide on
    ├── DecisionNotFoundError     an outcome names a decision we do not have
    ├── NoticeNotFoundError       a receipt names a notice we never sent
    ├── InteractionStateError     an event its interaction cannot take now (ended, stale
    │                             seq, too many or too old before `started`)
    ├── StoreError                a Redis store failed; `store` names which
    │   └── StoreUnavailableError  …slow or down: decide from context alone
    │       └── OutcomeLogUnavailableError  …the outcome log's Redis
    ├── ProfileImportError        an import file cannot be read at all
    ├── ConfigError               bad flags or environment at start
    ├── MomentError               the moment engine cannot take an event (durable_rules failed)
    │   └── MomentCapacityError    …it holds as many interactions (or held events) as it may
    └── AccessError               a caller may not make this call
        ├── UnauthenticatedError   …no credential, or one we do not accept
        └── PermissionDeniedError  …a good credential whose role does not allow it

They are translated to gRPC status codes in one place (server/status.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DecisionEngineError(Exception):
    """Base of every error the engine raises on purpose."""


@dataclass(frozen=True, slots=True)
class Where:
    """A place in a rule or case file (1-based; line 0 is the file, or the rules
    directory, as a whole, and is shown without a line: `rules: error: ...`)."""

    file: str
    line: int
    column: int = 1

    def __str__(self) -> str:
        if self.line == 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a rule file, located for the person who will fix it."""

    where: Where
    message: str
    severity: str = "error"

    @classmethod
    def at(cls, file: str, line: int, column: int, message: str) -> Problem:
        """A problem at file:line:column (0, 0 for the file as a whole)."""
        return cls(Where(file, line, column), message)

    @property
    def file(self) -> str:
        return self.where.file

    @property
    def line(self) -> int:
        return self.where.line

    @property
    def column(self) -> int:
        return self.where.column

    def __str__(self) -> str:
        return f"{self.where}: {self.severity}: {self.message}"


def tally(problems: Sequence[Problem]) -> str:
    """`2 errors, 1 warning`: how every command sums up the problems it printed."""
    parts = [
        _count(n, severity)
        for severity in ("error", "warning")
        if (n := sum(1 for p in problems if p.severity == severity))
    ]
    return ", ".join(parts) or "no problems"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


class RulesetError(DecisionEngineError):
    """The ruleset cannot go live; `problems` says where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class InvalidRequestError(DecisionEngineError):
    """A request field is wrong; the message names the field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class DecisionNotFoundError(DecisionEngineError):
    """An outcome names a decision that is unknown or has expired."""


class NoticeNotFoundError(DecisionEngineError):
    """A delivery receipt names a notice key that was never sent (or is forgotten)."""


class InteractionStateError(DecisionEngineError):
    """An event the interaction's state refuses; `field` names it (`events[3]`), `reason`
    is a short metric label (`ended`, `stale_seq`, `held_full`, `held_too_long`,
    `restarted`)."""

    def __init__(self, field: str, reason: str, message: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {message}")


class StoreError(DecisionEngineError):
    """A Redis store failed."""

    store = "profile store"
    """Which store, for the message a client sees."""


class StoreUnavailableError(StoreError):
    """A store is slow or down."""


class OutcomeLogUnavailableError(StoreUnavailableError):
    """The outcome log's Redis is slow or down: the outcome may not be recorded."""

    store = "outcome log"


class ProfileImportError(DecisionEngineError):
    """A profile file cannot be read at all (bad lines are reported, not raised)."""


class ConfigError(DecisionEngineError):
    """A setting is invalid."""


class MomentError(DecisionEngineError):
    """The moment engine cannot take an event: durable_rules reported an error."""


class MomentCapacityError(MomentError):
    """As many interactions are live (or waiting for their `started`) as the engine takes."""


class AccessError(DecisionEngineError):
    """A caller may not make this call; `reason` is a short metric label."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class UnauthenticatedError(AccessError):
    """No credential, or one that does not verify (unknown, expired, wrong audience)."""


class PermissionDeniedError(AccessError):
    """The credential is good but its role does not allow the call."""
