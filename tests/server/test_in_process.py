"""The fast tier: the server `create_server` builds, in this process, on the real Redis.

No `serve`, no workers: a Decide and a RecordOutcome end to end (gRPC, the session,
the store) in well under a second each.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine.store.keys import OFFER_STATS, OUTCOME_STREAM, history_key
from tests.server.in_process import in_process_server


@pytest.mark.usefixtures("demo_data")
def test_decide_and_record_an_outcome_in_process(redis_url: str) -> None:
    async def scenario() -> tuple[pb.DecideResponse, pb.RecordOutcomeResponse, str]:
        async with in_process_server(redis_url) as served:
            context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="cancel")
            decided = await served.stub.Decide(
                pb.DecideRequest(customer_id="C-1001", context=context), timeout=5
            )
            offer = decided.offers[0].offer_id
            recorded = await served.stub.RecordOutcome(
                pb.RecordOutcomeRequest(
                    decision_id=decided.decision_id, offer_id=offer, outcome=pb.OUTCOME_ACCEPTED
                ),
                timeout=5,
            )
            again = await served.stub.RecordOutcome(
                pb.RecordOutcomeRequest(
                    decision_id=decided.decision_id, offer_id=offer, outcome=pb.OUTCOME_ACCEPTED
                ),
                timeout=5,
            )
            assert again.duplicate and again.outcome_id == ""
            return decided, recorded, offer

    decided, recorded, offer = asyncio.run(scenario())
    assert decided.profile_found and not decided.degraded and decided.arm == "champion"
    assert (decided.routing.queue, decided.routing.priority) == ("retention_specialists", 1)
    assert offer == "retention-loyalty-credit" and "EUR 480" in decided.offers[0].script
    assert not recorded.duplicate and recorded.outcome_id
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        [(entry_id, fields)] = client.xrange(OUTCOME_STREAM)
        assert entry_id == recorded.outcome_id
        assert (fields["customer"], fields["offer"], fields["outcome"]) == (
            "C-1001",
            offer,
            "accepted",
        )
        assert client.hgetall(OFFER_STATS)[f"{offer}|accepted"] == "1"
        assert "accepted" in (client.hget(history_key("C-1001"), offer) or "")


@pytest.mark.usefixtures("demo_data")
def test_posteriors_are_made_again_only_when_the_counters_change(redis_url: str) -> None:
    async def scenario() -> None:
        async with in_process_server(redis_url) as served:
            await served.learned.refresh()
            first = served.learned.learned
            assert first is not None
            await served.learned.refresh()
            assert served.learned.learned is first  # nothing learned: kept, plans too
            context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="cancel")
            decided = await served.stub.Decide(
                pb.DecideRequest(customer_id="C-1001", context=context), timeout=5
            )
            offer = decided.offers[0].offer_id
            await served.stub.RecordOutcome(
                pb.RecordOutcomeRequest(
                    decision_id=decided.decision_id, offer_id=offer, outcome=pb.OUTCOME_ACCEPTED
                ),
                timeout=5,
            )
            await served.learned.refresh()
            after = served.learned.learned
            assert after is not None and after is not first
            before_mean = first.posterior(offer, None)
            after_mean = after.posterior(offer, None)
            assert before_mean is not None and after_mean is not None
            assert after_mean.mean > before_mean.mean
            # Updated, not rebuilt: other offers keep their very posteriors, and the plan
            # the Decide made is carried over, brought up to date.
            other = next(o for o in first.overall if o != offer)
            assert after.overall[other] is first.overall[other]
            assert after.plan_keys() == first.plan_keys() != []

    asyncio.run(scenario())
