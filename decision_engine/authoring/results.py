"""What a simulation found, as plain data: `simulation.py` and `diff.py` compute it; the
terminal (`render_text.py`), JSON (`render_json.py`) and HTML (`render_html.py`) reports
render it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line of an input file that was skipped, and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Run:
    """Per-customer results of one ruleset over a population, in population order."""

    queues: tuple[str, ...]
    rule_ids: tuple[str, ...]
    offer_ids: tuple[tuple[str, ...], ...]
    first_offer_ev: float
    all_offers_ev: float
    seconds: float
    """Time spent in the decision loop only."""


@dataclass(frozen=True, slots=True)
class Share:
    """How many customers got something, and their share of the population."""

    key: str
    count: int
    share: float
    title: str = ""


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One ruleset over the population, in figures."""

    rules_dir: str
    version: str
    label: str
    decisions: int
    seconds: float
    queues: tuple[Share, ...]
    """Queues reached, most customers first."""
    routing_rules: tuple[Share, ...]
    """Every routing rule in precedence order (those that never won too), then default."""
    offers: tuple[Share, ...]
    """Every offer, most shown first (those never shown too)."""
    no_offer: int
    first_offer_ev: float
    all_offers_ev: float

    @property
    def decisions_per_second(self) -> float:
        return self.decisions / self.seconds if self.seconds > 0 else 0.0

    @property
    def first_offer_ev_mean(self) -> float:
        """Per customer: one without an offer counts as zero."""
        return self.first_offer_ev / self.decisions if self.decisions else 0.0

    @property
    def all_offers_ev_mean(self) -> float:
        return self.all_offers_ev / self.decisions if self.decisions else 0.0


@dataclass(frozen=True, slots=True)
class Transition:
    """Customers whose routing queue went from one queue to another."""

    before: str
    after: str
    count: int


@dataclass(frozen=True, slots=True)
class OfferDelta:
    """An offer shown in the baseline vs the new ruleset, and to whom it changed."""

    offer_id: str
    title: str
    baseline: int
    new: int
    gained: int
    """Customers who see it now and did not before."""
    lost: int


@dataclass(frozen=True, slots=True)
class ListChange:
    """Customers whose ordered offer list went from one list to another."""

    before: tuple[str, ...]
    after: tuple[str, ...]
    count: int


@dataclass(frozen=True, slots=True)
class RuleDelta:
    """How often a routing rule won, before and after."""

    rule_id: str
    baseline: int
    new: int


@dataclass(frozen=True, slots=True)
class Diff:
    """What changes for the population when the new ruleset replaces the baseline."""

    changed_customers: tuple[str, ...]
    """Customers whose routing queue or ordered offer ids differ, in population order."""
    routing_changed: int
    offers_changed: int
    transitions: tuple[Transition, ...]
    offers: tuple[OfferDelta, ...]
    """Offers shown in either run, biggest change first."""
    top_changes: tuple[ListChange, ...]
    routing_rules: tuple[RuleDelta, ...]

    @property
    def changed(self) -> int:
        return len(self.changed_customers)


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """Everything a simulation found."""

    now: float
    population: str
    customers: int
    bad_lines: tuple[BadLine, ...]
    warnings: tuple[str, ...]
    new: RunSummary
    baseline: RunSummary | None = None
    diff: Diff | None = None
