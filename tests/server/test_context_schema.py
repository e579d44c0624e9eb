"""Decide checks the context against the schema: declared intents, declared attributes
(type, enum), and what it does with attributes the schema does not declare."""

from __future__ import annotations

import asyncio
import re
import shutil
import urllib.request
from pathlib import Path

import grpc
import pytest

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.errors import RulesetError
from decision_engine.ruleset.load import load_ruleset
from tests.server.conftest import RULES, Server
from tests.server.in_process import in_process_server

Stub = pb_grpc.DecisionServiceStub


def request(intent: str = "cancel", **attributes: str) -> pb.DecideRequest:
    context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent=intent, attributes=attributes)
    return pb.DecideRequest(customer_id="C-1001", context=context)


def refused(stub: Stub, req: pb.DecideRequest) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Decide(req, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return str(caught.value.details())


def scrape(server: Server, name: str) -> float:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_an_attribute_value_outside_its_enum_is_invalid_argument_naming_it(stub: Stub) -> None:
    assert refused(stub, request(card_status="weird")) == (
        "context.attributes[card_status]: 'weird' is not one of active, lost, stolen, blocked"
    )
    assert stub.Decide(request(card_status="stolen"), timeout=5).routing.queue


def test_an_undeclared_intent_is_invalid_argument_when_the_schema_lists_intents(
    stub: Stub,
) -> None:
    details = refused(stub, request(intent="cancle"))
    assert details.startswith("context.intent: 'cancle' is not one of cancel, billing_dispute")
    assert stub.Decide(request(intent=""), timeout=5).routing.queue, "no intent: still fine"


def test_undeclared_attributes_are_ignored_and_counted(server: Server, stub: Stub) -> None:
    before = scrape(server, "unknown_attributes_total")
    stub.Decide(request(device="ios", lang="fr"), timeout=5)
    assert scrape(server, "unknown_attributes_total") == before + 2
    invalid = 'invalid_requests_total{field="context.attributes"}'
    before_invalid = scrape(server, invalid)
    refused(stub, request(card_status="weird"))
    assert scrape(server, invalid) == before_invalid + 1


def strict_rules(tmp_path: Path, policy: str) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("tests"))
    ruleset = rules / "ruleset.yaml"
    ruleset.write_text(ruleset.read_text() + f"  unknown_attributes: {policy}\n")
    return rules


def test_undeclared_attributes_are_refused_when_the_ruleset_says_so(
    tmp_path: Path, redis_url: str
) -> None:
    rules = strict_rules(tmp_path, "reject")

    async def scenario() -> None:
        async with in_process_server(redis_url, rules=rules) as served:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await served.stub.Decide(request(device="ios"), timeout=5)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.details() == (
                "context.attributes[device]: is not declared in the schema (declared: card_status)"
            )
            await served.stub.Decide(request(card_status="lost"), timeout=5)

    asyncio.run(scenario())


def test_the_policy_is_checked_when_the_rules_load(tmp_path: Path) -> None:
    with pytest.raises(RulesetError) as caught:
        load_ruleset(strict_rules(tmp_path, "refuse"))
    assert "unknown_attributes must be one of ignore, reject" in str(caught.value.problems[0])
