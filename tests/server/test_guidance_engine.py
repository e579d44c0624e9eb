"""The moment engine itself behind the GuidanceService: the demo's moments, on real
Redis, in a moment loop (the other guidance tests use a small test detector)."""

from __future__ import annotations

import asyncio

import pytest

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine.moments.engine import MomentEngine
from tests.server.in_process import InProcess, in_process_server, running_moments
from tests.server.interaction_events import ended, said, started

pytestmark = pytest.mark.usefixtures("demo_data")


def test_the_demo_moments_reach_the_agent(redis_url: str) -> None:
    async def scenario(served: InProcess) -> list[pb.Guidance]:
        async with running_moments(redis_url, served, factory=MomentEngine):
            await served.guidance.PublishEvents(
                pb.PublishEventsRequest(
                    events=[
                        started("CALL-9", customer="C-1001"),
                        said("CALL-9", "e2", "I want to cancel, a competitor is cheaper"),
                        said("CALL-9", "e3", "and I think my card was stolen"),
                        ended("CALL-9"),
                    ]
                ),
                timeout=5,
            )
            call = served.guidance.WatchGuidance(
                pb.WatchGuidanceRequest(interaction_id="CALL-9"), timeout=30
            )
            return [item async for item in call]

    async def main() -> list[pb.Guidance]:
        async with in_process_server(redis_url) as served:
            return await scenario(served)

    guidance = asyncio.run(main())
    # Alice (C-1001: clv 48,000, churn risk 0.82) goes to a specialist, which supersedes
    # the general retention prompt; then the stolen card; a resolved call needs no survey.
    assert [g.moment_id for g in guidance] == ["cancel-high-value-transfer", "card-lost-or-stolen"]
    assert "Alice" in guidance[0].text
