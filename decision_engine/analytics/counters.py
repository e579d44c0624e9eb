"""The outcome counters in Redis (`nba:offer-stats`, `nba:arm-stats`), read in one
transaction and typed; fields that are not understood are listed, not fatal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import redis
import redis.cluster

from decision_engine.store.cluster import is_cluster_url, sync_redis
from decision_engine.store.keys import (
    APPLIED_CURSOR,
    ARM_STATS,
    DECISION_SECRET,
    OFFER_STATS,
    OUTCOME_STREAM,
)
from decision_engine.vocabulary import INTERACTION_OUTCOMES, OFFER_OUTCOMES

DECISIONS = "decisions"
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class OfferCounts:
    """Offer outcomes of one offer (in one arm, or in all)."""

    presented: int = 0
    accepted: int = 0
    declined: int = 0
    no_response: int = 0

    @property
    def total(self) -> int:
        return self.presented + self.accepted + self.declined + self.no_response


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """Decisions and interaction outcomes of one arm."""

    decisions: int = 0
    resolved: int = 0
    not_resolved: int = 0


@dataclass(frozen=True, slots=True)
class Counters:
    """The two hashes, typed."""

    arms: Mapping[str, ArmCounts]
    by_arm_offer: Mapping[tuple[str, str], OfferCounts]
    """(arm, offer) → counts, from the `arm|offer|outcome` fields."""
    by_offer: Mapping[str, OfferCounts]
    """offer → counts over all arms, from the `offer|outcome` fields."""
    ignored: tuple[str, ...] = ()
    """Fields not understood (unknown outcome, bad shape or value), in hash order."""

    @property
    def has_outcomes(self) -> bool:
        """Any offer or interaction outcome at all (decisions alone are not outcomes)."""
        offers = [*self.by_offer.values(), *self.by_arm_offer.values()]
        interactions = (c.resolved + c.not_resolved for c in self.arms.values())
        return any(c.total for c in offers) or any(interactions)


def _count(value: str) -> int | None:
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 0 else None


def parse_counters(offer_stats: Mapping[str, str], arm_stats: Mapping[str, str]) -> Counters:
    """Type the fields of `nba:offer-stats` and `nba:arm-stats` (offer ids have no "|")."""
    ignored: list[str] = []
    arm_fields: dict[str, Counter[str]] = {}
    for field, value in arm_stats.items():
        arm, sep, what = field.rpartition("|")
        n = _count(value)
        if not sep or what not in (DECISIONS, *INTERACTION_OUTCOMES) or n is None:
            ignored.append(f"{ARM_STATS} {field}")
            continue
        arm_fields.setdefault(arm, Counter())[what] += n
    per_arm: dict[tuple[str, str], Counter[str]] = {}
    per_offer: dict[str, Counter[str]] = {}
    for field, value in offer_stats.items():
        parts = field.split("|")
        n = _count(value)
        if len(parts) not in (2, 3) or parts[-1] not in OFFER_OUTCOMES or n is None:
            ignored.append(f"{OFFER_STATS} {field}")
            continue
        if len(parts) == 3:
            per_arm.setdefault((parts[0], parts[1]), Counter())[parts[2]] += n
        else:
            per_offer.setdefault(parts[0], Counter())[parts[1]] += n
    return Counters(
        arms={
            arm: ArmCounts(c[DECISIONS], c["resolved"], c["not_resolved"])
            for arm, c in arm_fields.items()
        },
        by_arm_offer={key: _offer_counts(c) for key, c in per_arm.items()},
        by_offer={offer: _offer_counts(c) for offer, c in per_offer.items()},
        ignored=tuple(ignored),
    )


def _offer_counts(c: Mapping[str, int]) -> OfferCounts:
    return OfferCounts(c["presented"], c["accepted"], c["declined"], c["no_response"])


def _client(redis_url: str) -> redis.Redis | redis.cluster.RedisCluster:
    """A short-lived client that gives up quickly on a Redis that does not answer."""
    return sync_redis(
        redis_url,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=CONNECT_TIMEOUT_S,
    )


def read_counters(redis_url: str) -> Counters:
    """Both hashes, read in one transaction so that they agree (on a Redis Cluster, where
    they are in two slots, one after the other); redis.RedisError or ValueError (a bad
    URL) when Redis cannot be read."""
    with _client(redis_url) as client:
        pipe = client.pipeline(transaction=not is_cluster_url(redis_url))
        pipe.hgetall(OFFER_STATS)
        pipe.hgetall(ARM_STATS)
        offer_stats, arm_stats = pipe.execute()
    return parse_counters(offer_stats, arm_stats)


def is_outcome_log(redis_url: str) -> bool:
    """Whether this Redis holds only the outcome log (`nba:outcomes`), not the decision
    Redis the counters are applied to (which has the applied cursor or the shared key
    decision ids are signed with)."""
    with _client(redis_url) as client:
        if not client.exists(OUTCOME_STREAM):
            return False
        return not client.exists(ARM_STATS, OFFER_STATS, APPLIED_CURSOR, DECISION_SECRET)
