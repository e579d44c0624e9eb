"""The server built by `create_server` inside the test's own event loop: no `serve`,
no worker processes, metrics in prometheus_client's default registry; and a moment loop
beside it (`running_moments`), as a moment process runs it."""

from __future__ import annotations

import asyncio
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
from decision_engine.server.auth import Authenticator
from decision_engine.server.decision_ids import DecisionIds
from decision_engine.server.detector import DetectorFactory
from decision_engine.server.limits import DEFAULT_LIMITS, ServerLimits
from decision_engine.server.moment_loop import MomentLoop
from decision_engine.server.service import ActiveRuleset, LearnedState
from decision_engine.server.session import DecisionSession
from decision_engine.store.connection import PipelinedConnection
from decision_engine.store.interactions import MOMENT_SHARDS
from decision_engine.store.profiles import ProfileStore
from decision_engine.store.work_queue import consumer_name
from tests.server.conftest import RULES
from tests.server.detectors import KeywordDetector


@dataclass
class InProcess:
    stub: pb_grpc.DecisionServiceStub
    """An asyncio stub: `await stub.Decide(...)`."""
    store: ProfileStore
    learned: LearnedState
    rules: ActiveRuleset
    challenger: ActiveRuleset | None
    guidance: pb_grpc.GuidanceServiceStub
    """Live guidance on the same server."""
    ids: DecisionIds
    channel: grpc.aio.Channel
    notices: pb_grpc.NoticeServiceStub
    """Business events and receipts, on the same server."""


@asynccontextmanager
async def in_process_server(
    redis_url: str,
    *,
    rules: Path = RULES,
    challenger: Path | None = None,
    experiment: Experiment | None = None,
    limits: ServerLimits = DEFAULT_LIMITS,
    authenticator: Authenticator | None = None,
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
    ids = DecisionIds(b"in-process test secret", ttl_s=86_400)
    server, port, health = await create_server(
        address="127.0.0.1:0",
        rules=champion,
        store=store,
        store_timeout_s=1.0,
        reuse_port=False,
        rules_dir=str(rules),
        ids=ids,
        learned=learned,
        challenger=other,
        experiment=experiment,
        limits=limits,
        authenticator=authenticator,
    )
    await server.start()
    await mark_serving(health)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield InProcess(
            pb_grpc.DecisionServiceStub(channel),
            store,
            learned,
            champion,
            other,
            pb_grpc.GuidanceServiceStub(channel),
            ids,
            channel,
            pb_grpc.NoticeServiceStub(channel),
        )
    finally:
        await channel.close()
        await server.stop(None)
        await store.aclose()


@asynccontextmanager
async def running_moments(
    redis_url: str, served: InProcess, *, factory: DetectorFactory = KeywordDetector
) -> AsyncIterator[MomentLoop]:
    """A moment loop over every shard, in this event loop, deciding with the server's
    rules, store, learning and signing key; stopped (not killed) on the way out."""
    session = DecisionSession(
        served.rules, served.store, store_timeout_s=1.0, ids=served.ids, learned=served.learned
    )
    connection, reader = PipelinedConnection(redis_url), PipelinedConnection(redis_url)
    loop = MomentLoop(
        connection=connection,
        reader=reader,
        shards=range(MOMENT_SHARDS),
        consumer=consumer_name(0),
        factory=factory,
        rules=served.rules,
        session=session,
        store=served.store,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield loop
    finally:
        stop.set()
        await task
        loop.close()
        await connection.aclose()
        await reader.aclose()
