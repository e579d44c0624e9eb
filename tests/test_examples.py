"""Every ruleset in examples/ loads, passes its own rule tests, and is served over gRPC.

An example is a directory of rule files with its own tests/ (see examples/*/README.md).
Each one must also have a served case below: a customer of its own business, decided by
a real `decision-engine serve` on a real Redis, with a route and an offer of that business.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from decision_engine import load_compiled
from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.authoring.case_run import run_cases
from decision_engine.authoring.population import profile_schema
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.importer import canonical_profile
from decision_engine.store.profiles import ProfileStore
from tests.server.conftest import start_server

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_DIRS = sorted(p for p in EXAMPLES.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass(frozen=True)
class Served:
    """One Decide against an example, and what its business expects back."""

    profile: dict[str, object]
    intent: str
    channel: pb.Channel.ValueType
    queue: str
    first_offer: str
    script_contains: str


SERVED = {
    # A vulnerable customer in arrears who calls about a high bill: priority services,
    # and the payment plan (EUR 400 over 12 months) before anything else.
    "energy": Served(
        profile={
            "customer_id": "E-TEST-1",
            "first_name": "Sam",
            "clv": 2500,
            "churn_risk": 0.2,
            "tariff": "standard_variable",
            "fuel": "dual_fuel",
            "meter_type": "smart",
            "payment_method": "direct_debit",
            "arrears_eur": 400,
            "days_in_arrears": 20,
            "vulnerable": True,
        },
        intent="high_bill",
        channel=pb.CHANNEL_VOICE,
        queue="priority_services",
        first_offer="payment-plan",
        script_contains="EUR 33 a month",
    ),
}


def test_there_are_examples_and_each_has_a_served_case() -> None:
    assert EXAMPLE_DIRS, f"no example rulesets in {EXAMPLES}"
    assert {p.name for p in EXAMPLE_DIRS} == set(SERVED)


@pytest.mark.parametrize("directory", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_the_example_passes_its_own_rule_tests(directory: Path) -> None:
    ruleset = load_compiled(directory)
    assert ruleset.source.label == directory.name
    report = run_cases(directory)
    failed = [f"{r.name}: {r.failures} {r.problems}" for r in report.results if not r.passed]
    assert not failed, "\n".join(failed)
    assert report.passed >= 25
    assert not report.coverage.unexercised, report.coverage.unexercised


@pytest.mark.parametrize("directory", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_the_example_is_served_over_grpc(
    directory: Path, redis_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    case = SERVED[directory.name]
    schema = profile_schema(load_compiled(directory))
    customer_id, fields = canonical_profile(case.profile, schema)

    async def put() -> None:
        store = ProfileStore.from_url(redis_url)
        try:
            await store.put_profiles([(customer_id, fields)])
        finally:
            await store.aclose()

    asyncio.run(put())
    server = start_server(
        tmp_path, "--rules", str(directory), "--redis-url", redis_server.url, workers=1
    )
    try:
        with server.channel() as channel:
            context = pb.InteractionContext(channel=case.channel, intent=case.intent)
            request = pb.DecideRequest(customer_id=customer_id, context=context)
            reply = pb_grpc.DecisionServiceStub(channel).Decide(request, timeout=5)
    finally:
        assert server.stop() == 0, server.log()
    assert reply.profile_found and not reply.degraded
    assert reply.routing.queue == case.queue
    assert reply.offers, "no offer"
    assert reply.offers[0].offer_id == case.first_offer
    assert case.script_contains in reply.offers[0].script
    assert reply.ruleset_version == load_compiled(directory).version


def test_the_energy_schema_declares_a_believable_population() -> None:
    """Without a profiles file, `simulate` draws the mix the schema's `population:` says:
    a few vulnerable customers and a tenth in arrears, not half of them each."""
    from click.testing import CliRunner

    from decision_engine.authoring.simulate_command import simulate_command

    args = ["--rules", str(EXAMPLES / "energy"), "--count", "2000", "--now", "2025-03-03"]
    result = CliRunner().invoke(simulate_command, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["new"]
    queues = {q["id"]: q["share"] for q in report["queues"]}
    offers = {o["id"]: o["share"] for o in report["offers"]}
    assert 0.4 < queues["customer_service"] < 0.6
    assert 0.04 < queues["priority_services"] < 0.1
    assert 0.05 < queues["collections"] < 0.15
    assert 0.05 < offers["payment-plan"] < 0.2
