"""The server built by `create_server` inside the test's own event loop: no `serve`,
no worker processes, metrics in prometheus_client's default registry."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.decide.experiment import CHALLENGER, Experiment
from decision_engine.ruleset.compiled import load_compiled
from decision_engine.server.app import create_server, mark_serving
from decision_engine.server.decision_ids import DecisionIds
from decision_engine.server.service import ActiveRuleset, LearnedState
from decision_engine.store.profiles import ProfileStore
from tests.server.conftest import RULES


@dataclass
class InProcess:
    stub: pb_grpc.DecisionServiceStub
    """An asyncio stub: `await stub.Decide(...)`."""
    store: ProfileStore
    learned: LearnedState
    rules: ActiveRuleset
    challenger: ActiveRuleset | None


@asynccontextmanager
async def in_process_server(
    redis_url: str,
    *,
    rules: Path = RULES,
    challenger: Path | None = None,
    experiment: Experiment | None = None,
) -> AsyncIterator[InProcess]:
    """A started server on an ephemeral port, SERVING, and a channel to it."""
    store = ProfileStore.from_url(redis_url)
    champion = ActiveRuleset(load_compiled(rules), loaded_at=time.time())
    other = (
        ActiveRuleset(load_compiled(challenger), loaded_at=time.time(), arm=CHALLENGER)
        if challenger is not None
        else None
    )
    learned = LearnedState(champion, store)
    server, port, health = await create_server(
        address="127.0.0.1:0",
        rules=champion,
        store=store,
        store_timeout_s=1.0,
        reuse_port=False,
        rules_dir=str(rules),
        ids=DecisionIds(b"in-process test secret", ttl_s=86_400),
        learned=learned,
        challenger=other,
        experiment=experiment,
    )
    await server.start()
    await mark_serving(health)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield InProcess(pb_grpc.DecisionServiceStub(channel), store, learned, champion, other)
    finally:
        await channel.close()
        await server.stop(None)
        await store.aclose()
