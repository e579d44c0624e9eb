"""Champion / challenger / control: which arm a customer is in. Pure.

The arm comes from a hash of the customer id, so a customer gets the same arm on
every call, channel and replica, and the split needs no shared state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

CHAMPION, CHALLENGER, CONTROL = "champion", "challenger", "control"


@dataclass(frozen=True, slots=True)
class Experiment:
    """Shares of customers per arm; the rest get the champion."""

    control_share: float = 0.0
    """Customers who get no offer at all (the holdout that uplift is measured against)."""
    challenger_share: float = 0.0
    """Customers decided by the challenger rules."""

    def __post_init__(self) -> None:
        if not (0 <= self.control_share <= 1 and 0 <= self.challenger_share <= 1):
            raise ValueError("arm shares are between 0 and 1")
        if self.control_share + self.challenger_share > 1:
            raise ValueError("control and challenger shares add up to more than 1")

    def arm_of(self, customer_id: str) -> str:
        if not self.control_share and not self.challenger_share:
            return CHAMPION
        point = bucket(customer_id)
        if point < self.control_share:
            return CONTROL
        if point < self.control_share + self.challenger_share:
            return CHALLENGER
        return CHAMPION


def bucket(customer_id: str) -> float:
    """A stable point in [0, 1) for a customer id."""
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8, person=b"nba-arm").digest()
    return int.from_bytes(digest, "big") / 2**64
