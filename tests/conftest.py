"""Shared fixtures: one real redis-server per test session, emptied before each test."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from decision_engine.store.embedded import EmbeddedRedis

# A ruleset that is not the demo: a small bank, with its own fields and enums.
BANK_RULESET = {
    "ruleset.yaml": """\
ruleset:
  label: bank
  description: A small retail bank, for tests.
schema:
  profile:
    card_status:   {type: enum, values: [active, frozen, closed]}
    balance:       {type: number, min: -5000, max: 50000}
    days_past_due: {type: integer, min: 0, max: 120}
    has_mortgage:  {type: bool}
    kyc_verified:  {type: bool}
    card_tier:     {type: enum, values: [classic, gold, black]}
    segment:       {type: enum, values: [mass, affluent, premier]}
  intents: [balance_inquiry, card_problem, loan]
""",
    "offers.yaml": """\
offers:
  - id: mortgage-refinance
    title: Mortgage refinance
    category: cross_sell
    when: has_mortgage == true
    value: 200
    cost: 0
    propensity: 0.2
    script: Would you like to review your mortgage rate?
  - id: card-upgrade
    title: Card upgrade
    category: upsell
    when:
      - card_tier == "classic"
      - balance >= 10000
      - kyc_verified == true
    value: 120
    cost: 10
    propensity: 0.3
    script: You qualify for a gold card.
  - id: payment-plan
    title: Payment plan
    category: service
    when: days_past_due >= 30
    value: 90
    cost: 0
    propensity: 0.5
    script: We can set up a payment plan.
""",
    "routing.yaml": """\
routing:
  default:
    queue: general
    priority: 5
    reason: Everyone else
  rules:
    - id: collections
      when: days_past_due >= 60
      queue: collections
      priority: 2
      precedence: 10
      reason: Far past due
""",
    "arbitration.yaml": """\
arbitration:
  max_offers: 2
""",
}


@pytest.fixture
def bank_rules(tmp_path: Path) -> Path:
    """A non-demo ruleset (a bank) written to a temporary directory."""
    directory = tmp_path / "bank"
    directory.mkdir()
    for name, text in BANK_RULESET.items():
        (directory / name).write_text(text)
    return directory


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real redis-server on an ephemeral port, in a throwaway data dir."""
    with EmbeddedRedis(data_dir=tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """URL of the session's server, with every key removed."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


def fill_for_a_slow_load(url: str, *, megabytes: int = 20) -> None:
    """Random values (they do not compress) in an RDB-preamble AOF: restarted with
    key-load-delay, Redis then answers -LOADING for seconds (see SlowRestart)."""
    with redis.Redis.from_url(url) as client:
        with client.pipeline(transaction=False) as pipe:
            for n in range(megabytes * 100):
                pipe.set(f"filler:{n}", os.urandom(10_000))
            pipe.execute()
        client.bgrewriteaof()
        deadline = time.monotonic() + 30
        while True:
            persistence = client.info("persistence")
            if not (persistence["aof_rewrite_in_progress"] or persistence["aof_rewrite_scheduled"]):
                break
            assert time.monotonic() < deadline, "the AOF rewrite did not finish"
            time.sleep(0.05)


class SlowRestart:
    """Restart a Redis on its port and data: it loads for ~3 s (1.5 ms per key of
    fill_for_a_slow_load), answering -LOADING meanwhile; `start()` returns at once."""

    def __init__(self, server: EmbeddedRedis) -> None:
        server.stop()
        self.server = EmbeddedRedis(
            data_dir=server.data_dir,
            port=server.port,
            fsync=server.fsync,
            config={"key-load-delay": "1500"},
        )
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._start, daemon=True)

    def _start(self) -> None:
        try:
            self.server.start()
        except BaseException as exc:
            self._failed = exc

    def start(self) -> SlowRestart:
        self._thread.start()
        return self

    @property
    def loading(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float = 60.0) -> EmbeddedRedis:
        """Until it has loaded its data."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "Redis is still loading"
        if self._failed is not None:
            raise self._failed
        return self.server
