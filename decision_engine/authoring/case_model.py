"""What a rule test case says, and what running it found (see cases.py for the file format)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from decision_engine.decide.notices import BusinessEvent, SentNotice
from decision_engine.decide.values import Context, CustomerState
from decision_engine.errors import Problem, Where
from decision_engine.moments.model import EventValue

CASES_SUBDIR = "tests"
DEFAULT_ROUTE = "default"
"""The rule id a decision carries when no routing rule applied."""

# -- what a case says ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoutingExpectation:
    """Expected routing; None means "not checked"."""

    queue: str | None = None
    priority: int | None = None
    skip_ivr: bool | None = None
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class OffersExpectation:
    """Expected offers; empty or None means "not checked"."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    first: str | None = None
    order: tuple[str, ...] | None = None
    """The exact offer ids, in order."""
    count: int | None = None
    categories_exclude: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Expectation:
    """Everything a case checks about its decision."""

    routing: RoutingExpectation | None = None
    offers: OffersExpectation | None = None
    script_contains: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(offer id, texts its script must contain)."""
    profile_found: bool | None = None
    degraded: bool | None = None


@dataclass(frozen=True, slots=True)
class Case:
    """One test case, ready to hand to `decide`."""

    name: str
    where: Where
    now: float
    state: CustomerState
    context: Context
    interaction_id: str
    max_offers: int
    degraded: bool
    """The store is down: decide gets no state at all."""
    expect: Expectation
    caps_spent: frozenset[str] = frozenset()
    """Capped offers whose budget for the day is spent."""


# -- what a moment case says (live guidance) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """One event of a moment case, `at` seconds after the interaction started."""

    at: float
    kind: str
    data: Mapping[str, EventValue]
    where: Where


@dataclass(frozen=True, slots=True)
class GuidanceExpectation:
    """One expected detection; None (or empty) means "not checked"."""

    moment: str
    where: Where
    kind: str | None = None
    severity: str | None = None
    title_contains: tuple[str, ...] = ()
    text_contains: tuple[str, ...] = ()
    route_queue: str | None = None
    route_priority: int | None = None
    decide: bool | None = None
    context: tuple[tuple[str, str], ...] = ()
    """`set:` updates the detection must carry (field, text)."""
    at: float | None = None
    """Seconds after the start at which it is detected."""


@dataclass(frozen=True, slots=True)
class MomentExpectation:
    """What a moment case checks: the exact guidance in order, and moments that never fire."""

    guidance: tuple[GuidanceExpectation, ...] | None
    """None: not checked (only `none`)."""
    none: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MomentCase:
    """A live interaction: its customer, a timed list of events, the guidance expected."""

    name: str
    where: Where
    now: float
    """When the interaction starts (its `started` event, from `context`)."""
    state: CustomerState
    context: Context
    interaction_id: str
    events: tuple[CaseEvent, ...]
    until: float | None
    """Let the clock run to this many seconds after the start (deadlines due by then fire)."""
    expect: MomentExpectation


# -- what a notice case says (proactive care) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class NoticeExpectation:
    """One notice expected to go out (sent now or held); None (or empty) means "not checked"."""

    notice: str
    where: Where
    channel: str | None = None
    status: str | None = None
    """"send" (at once) or "held" (quiet hours)."""
    text_contains: tuple[str, ...] = ()
    subject_contains: tuple[str, ...] = ()
    held_until: datetime | None = None
    """When a held notice goes out; its offset is how a failure shows the actual time."""


@dataclass(frozen=True, slots=True)
class NoticesExpectation:
    """What a notice case checks: the exact notices that go out, and why others do not."""

    notices: tuple[NoticeExpectation, ...] | None
    """None: not checked (only `suppressed`); empty: nothing goes out."""
    suppressed: tuple[tuple[str, str], ...] = ()
    """(notice id, reason) for notices that must be suppressed, and why."""


@dataclass(frozen=True, slots=True)
class NoticeCase:
    """A business event for one customer, what they were already sent, the notices expected."""

    name: str
    where: Where
    now: float
    profile: Mapping[str, str] | None
    event: BusinessEvent
    sent: tuple[SentNotice, ...]
    expect: NoticesExpectation


# -- what running says ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """One expectation that did not hold."""

    what: str
    """Which expectation, e.g. "routing.queue"."""
    expected: str
    actual: str
    why: str = ""
    """What the explanation says about the rule the case expected."""

    def __str__(self) -> str:
        return f"{self.what}: expected {self.expected}, got {self.actual}"


@dataclass(frozen=True, slots=True)
class CaseResult:
    """A case that ran (failures) or could not run (problems in its file)."""

    name: str
    where: Where
    failures: tuple[Failure, ...] = ()
    problems: tuple[Problem, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures and not self.problems

    @property
    def status(self) -> str:
        if self.problems:
            return "error"
        return "fail" if self.failures else "pass"


@dataclass(frozen=True, slots=True)
class Unexercised:
    """A rule that no case made apply."""

    kind: str
    """"offer", "routing", "policy", "contact policy", "moment" or "notice"."""
    rule_id: str
    where: Where


@dataclass(frozen=True, slots=True)
class Coverage:
    """How many of the ruleset's rules the cases exercised."""

    total: int
    unexercised: tuple[Unexercised, ...]

    @property
    def exercised(self) -> int:
        return self.total - len(self.unexercised)

    @property
    def percent(self) -> float:
        return 100.0 * self.exercised / self.total if self.total else 100.0


@dataclass(frozen=True, slots=True)
class CaseReport:
    """The outcome of every case, and the rules none of them exercised."""

    ruleset_version: str
    ruleset_label: str
    cases_dir: Path
    results: tuple[CaseResult, ...]
    coverage: Coverage

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    @property
    def ok(self) -> bool:
        return self.failed == 0
