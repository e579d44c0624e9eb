"""Champion / challenger / control over gRPC, and the report built from the outcomes."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.decide.experiment import Experiment
from decision_engine.decide.learning import learned_from
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.outcomes import load_learning
from tests.server.conftest import RULES, start_server
from tests.server.in_process import in_process_server


def decide(target: str, customer: str) -> pb.DecideResponse:
    # A fresh connection each time, so that both workers answer over the test.
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="cancel")
        request = pb.DecideRequest(customer_id=customer, context=context)
        return pb_grpc.DecisionServiceStub(ch).Decide(request, timeout=5)


def test_arms_are_stable_and_the_control_group_gets_no_offer(
    tmp_path: Path, redis_url: str, redis_server: EmbeddedRedis
) -> None:
    challenger = tmp_path / "challenger"
    shutil.copytree(RULES, challenger, ignore=shutil.ignore_patterns("tests"))
    offers = challenger / "offers.yaml"
    # The challenger's plan review is worth more, so it ranks first for cancel calls.
    offers.write_text(offers.read_text().replace("    value: 80\n", "    value: 900000\n", 1))
    server = start_server(
        tmp_path, "--rules", str(RULES), "--redis-url", redis_server.url,
        "--challenger-rules", str(challenger), "--challenger-share", "0.3",
        "--control-share", "0.2",
    )  # fmt: skip
    experiment = Experiment(control_share=0.2, challenger_share=0.3)
    try:
        arms: Counter[str] = Counter()
        versions: dict[str, set[str]] = {}
        for n in range(120):
            customer = f"C-x{n}"
            first, again = decide(server.target, customer), decide(server.target, customer)
            expected = experiment.arm_of(customer)
            assert first.arm == again.arm == expected
            arms[first.arm] += 1
            versions.setdefault(first.arm, set()).add(first.ruleset_version)
            if first.arm == "control":
                assert not first.offers and first.routing.queue  # routed, but no offer
            else:
                assert first.offers[0].offer_id == "retention-plan-review"
                assert first.offers[0].value == (900000 if first.arm == "challenger" else 80)
        assert set(arms) == {"champion", "challenger", "control"}
        # Two rule versions live at once; control is decided (routed) by the champion's.
        assert len(versions["challenger"]) == len(versions["champion"]) == 1
        assert versions["challenger"] != versions["champion"] == versions["control"]
        assert 0.1 < arms["control"] / 120 < 0.3 and 0.2 < arms["challenger"] / 120 < 0.4

        # Outcomes per arm, then the report that reads them.
        presented: Counter[str] = Counter()
        resolved: Counter[str] = Counter()
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            for n in range(40):
                reply = decide(server.target, f"C-x{n}")
                outcome = pb.OUTCOME_RESOLVED if n % 2 else pb.OUTCOME_NOT_RESOLVED
                stub.RecordOutcome(
                    pb.RecordOutcomeRequest(decision_id=reply.decision_id, outcome=outcome)
                )
                resolved[reply.arm] += n % 2
                if reply.offers:
                    presented[reply.arm] += 1
                    stub.RecordOutcome(
                        pb.RecordOutcomeRequest(
                            decision_id=reply.decision_id,
                            offer_id=reply.offers[0].offer_id,
                            outcome=pb.OUTCOME_PRESENTED,
                        )
                    )
        report = subprocess.run(
            [sys.executable, "-m", "decision_engine.cli", "report", "--redis-url",
             redis_server.url, "--json"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        by_arm = {row["arm"]: row for row in json.loads(report)["arms"]}
        assert set(by_arm) == {"champion", "challenger", "control"}
        for arm, row in by_arm.items():
            assert row["presented"] == presented[arm]
            assert row["resolved"] == resolved[arm]
        assert by_arm["control"]["presented"] == 0
        assert by_arm["challenger"]["uplift_over_control"] is not None
    finally:
        server.stop()


def test_the_challenger_learns_with_its_own_settings_from_the_shared_counters(
    tmp_path: Path, redis_url: str
) -> None:
    """The champion does not learn, the challenger does: an outcome of a challenger
    decision updates the per-offer counters (as the challenger learns), and the
    challenger's decisions use the posteriors its own ruleset makes of them."""
    champion = tmp_path / "champion"
    shutil.copytree(RULES, champion, ignore=shutil.ignore_patterns("tests"))
    arbitration = champion / "arbitration.yaml"
    text = arbitration.read_text()
    arbitration.write_text(text.replace("  learning:\n", "  learning:\n    enabled: false\n"))
    challenger = tmp_path / "challenger"
    shutil.copytree(RULES, challenger, ignore=shutil.ignore_patterns("tests"))
    # No exploration: the challenger ranks by the posterior means.
    (challenger / "arbitration.yaml").write_text(
        text.replace("exploration: 0.05", "exploration: 0")
    )
    everyone = Experiment(challenger_share=1.0)

    async def scenario() -> None:
        async with in_process_server(
            redis_url, rules=champion, challenger=challenger, experiment=everyone
        ) as served:
            assert served.challenger is not None
            context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="cancel")
            request = pb.DecideRequest(customer_id="C-x1", context=context)
            first = await served.stub.Decide(request, timeout=5)
            assert first.arm == "challenger"
            offer = first.offers[0]
            spec = next(
                o.spec for o in served.challenger.current.offers if o.spec.id == offer.offer_id
            )
            assert offer.propensity == pytest.approx(spec.propensity)
            for _ in range(5):
                decided = await served.stub.Decide(request, timeout=5)
                await served.stub.RecordOutcome(
                    pb.RecordOutcomeRequest(
                        decision_id=decided.decision_id,
                        offer_id=offer.offer_id,
                        outcome=pb.OUTCOME_ACCEPTED,
                    ),
                    timeout=5,
                )
            # Applied as the challenger learns, though the champion does not.
            stored = await load_learning(served.store.connection)
            assert offer.offer_id in stored
            await served.learned.refresh()
            assert served.learned.learned is None  # the champion does not learn
            expected = learned_from(stored, served.challenger.current, now=time.time())
            mean = expected.overall[offer.offer_id].mean
            assert mean > spec.propensity
            after = await served.stub.Decide(request, timeout=5)
            learned_offer = next(o for o in after.offers if o.offer_id == offer.offer_id)
            assert learned_offer.propensity == pytest.approx(mean, rel=1e-3)

    asyncio.run(scenario())
