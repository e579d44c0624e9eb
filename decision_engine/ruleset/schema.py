"""Field types that rule files declare, and how raw values become typed ones.

The same parsing serves the profile import (reject bad lines) and the decision
core (type what Redis returns), so a value accepted on import is always usable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

Value = float | int | str | bool | date
"""A typed field value; numbers are compared as floats."""

KINDS = ("number", "integer", "string", "enum", "date", "bool")

UNKNOWN_ATTRIBUTES = ("ignore", "reject")
"""What Decide does with a context attribute the schema does not declare."""

_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "f"})


SHAPES = ("share", "weights", "normal", "lognormal", "uniform", "days", "declared")
"""How a declared population draws a field's value (FieldPopulation.shape)."""


@dataclass(frozen=True, slots=True)
class FieldPopulation:
    """How generated customers get a field (`population:` in its declaration)."""

    shape: str
    """One of SHAPES: "share" (a bool true for `share` of them), "weights" (an enum's
    values by weight), "normal" (mean, sd), "lognormal" (median, multiplicative spread),
    "uniform" (low, high), "days" (a date today + low..high days), "declared" (drawn from
    the declaration alone, as without a population)."""
    share: float = 0.0
    weights: tuple[tuple[str, float], ...] = ()
    low: float = 0.0
    """Mean, median or lower bound, by shape."""
    high: float = 0.0
    """Standard deviation, spread or upper bound, by shape."""
    absent: float = 0.0
    """Share of customers without the field."""
    present_with: str = ""
    """A field declared before it: this one is present exactly when that one is."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A declared field: its type and the values it may take."""

    name: str
    kind: str
    """One of KINDS."""
    values: tuple[str, ...] = ()
    """Allowed values of an enum."""
    minimum: float | None = None
    maximum: float | None = None
    source: str = "profile"
    """Where the value comes from: "profile", "context", "attribute" or "derived"."""
    description: str = ""
    population: FieldPopulation | None = None
    """How generated customers get it; None: the demo's shape or the declaration's."""

    def parse(self, raw: object) -> Value:
        """Type a raw value (from Redis, JSON or CSV); ValueError says why it is not valid."""
        if self.kind in ("number", "integer"):
            return self._parse_number(raw)
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(f"{self.name}: {raw!r} is not a boolean (true/false)")
        if self.kind == "date":
            if isinstance(raw, date):
                return raw
            try:
                return date.fromisoformat(str(raw).strip()[:10])
            except ValueError:
                raise ValueError(f"{self.name}: {raw!r} is not an ISO date (YYYY-MM-DD)") from None
        if not isinstance(raw, str | int | float) or isinstance(raw, bool):
            raise ValueError(f"{self.name}: expected text, got {type(raw).__name__}")
        text = str(raw)
        if self.kind == "enum" and text not in self.values:
            raise ValueError(f"{self.name}: {text!r} is not one of {', '.join(self.values)}")
        return text

    def _parse_number(self, raw: object) -> float | int:
        if isinstance(raw, bool):
            raise ValueError(f"{self.name}: expected a number, got a boolean")
        try:
            number = float(raw) if isinstance(raw, int | float) else float(str(raw).strip())
        except ValueError:
            raise ValueError(f"{self.name}: {raw!r} is not a number") from None
        if math.isnan(number) or math.isinf(number):
            raise ValueError(f"{self.name}: {raw!r} is not a finite number")
        if self.kind == "integer" and not number.is_integer():
            raise ValueError(f"{self.name}: {raw!r} is not a whole number")
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"{self.name}: {raw!r} is below the minimum {self.minimum:g}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"{self.name}: {raw!r} is above the maximum {self.maximum:g}")
        return int(number) if self.kind == "integer" else number

    def to_text(self, value: Value) -> str:
        """The canonical text form, as stored in Redis."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)
