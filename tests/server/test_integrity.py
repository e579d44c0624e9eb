"""What a client (or an old tool writing to Redis) can do to other calls: ids that
poison stored history, timestamps out of range. Real redis-server, real `serve`
processes."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine.store.keys import (
    OUTCOME_STREAM,
    contacts_key,
    history_key,
    profile_key,
)
from tests.server.conftest import Server
from tests.server.test_outcomes import (
    UPGRADE,
    Stub,
    decide,
    offer_ids,
    record,
)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        yield r


def scrape(server: Server) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


# --------------------------------------------------------------------------- identifiers

BAD_IDS = ["i;x|declined", "a|b", "a;b", "{C-1}", "C}1", "C 1", "C\t1", "C\x011", "Ç-1", "C-1\n"]


@pytest.mark.parametrize("value", BAD_IDS)
@pytest.mark.parametrize("field", ["customer_id", "interaction_id"])
def test_ids_outside_the_allowed_characters_are_refused(stub: Stub, field: str, value: str) -> None:
    request = {"customer_id": "C-1007", field: value}
    context = pb.InteractionContext(channel=pb.CHANNEL_VOICE)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Decide(pb.DecideRequest(context=context, **request), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}:"), caught.value.details()


@pytest.mark.usefixtures("demo_data")
def test_ids_with_every_allowed_character_are_accepted(stub: Stub, client: redis.Redis) -> None:
    customer = "a-Z_0.9:x@y/z+w=v"
    d = decide(stub, customer, interaction_id=customer)
    assert not d.profile_found
    assert client.hexists(contacts_key(customer), customer)


@pytest.mark.usefixtures("demo_data")
def test_an_offer_id_outside_the_allowed_characters_is_refused(stub: Stub) -> None:
    d = decide(stub, "C-1007")
    for value in ("a|b", "x;y", "{z}", "a b"):
        with pytest.raises(grpc.RpcError) as caught:
            record(stub, d.decision_id, value, pb.OUTCOME_DECLINED)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith("offer_id:")


# --------------------------------------------------------------------------- stored junk


@pytest.mark.usefixtures("demo_data")
def test_stored_entries_that_do_not_parse_are_skipped_and_counted(
    server: Server, stub: Stub, client: redis.Redis
) -> None:
    """Regression: one poisoned history entry made every Decide of that customer UNKNOWN."""
    now = time.time()
    good = f"{now - 86_400:.3f}|declined|i-1"
    # What the outcome script stored for interaction id 'i;x|declined', and other junk.
    client.hset(
        history_key("C-1007"),
        mapping={
            UPGRADE: f"{good};{now:.3f}|declined|i;x|declined",
            "streaming-bundle": "abc|declined|i-2;inf|declined|i-3;|presented",
        },
    )
    client.hset(
        contacts_key("C-1007"),
        mapping={
            "hex": "0x7fffffff|voice|cancel",
            "short": f"{now:.0f}",
            "ok": f"{now:.3f}|chat|x",
        },
    )
    client.hset(
        profile_key("C-1007"),
        mapping={"clv": "abc", "contract_end": "notadate", "tenure_months": "nan"},
    )
    before = scrape(server)
    for _ in range(6):
        for s in server.stub():
            r = decide(s, "C-1007", explain=True)
            assert r.profile_found and not r.degraded
            # The parseable decline still suppresses the offer.
            assert UPGRADE not in offer_ids(r)
    after = scrape(server)
    name = "stored_entries_skipped_total"
    for kind, per_call in (("offer_event", 4), ("contact", 1), ("profile_field", 3)):
        counted = metric(after, name, f'kind="{kind}"') - metric(before, name, f'kind="{kind}"')
        assert counted == 6 * per_call, (kind, counted)
    warnings = [line for line in server.log().splitlines() if "do not parse" in line]
    assert warnings, server.log()[-2000:]
    assert len(warnings) <= 2 * 3, "once per worker and kind, not per request"
    assert not any("C-1007" in line for line in warnings)


# --------------------------------------------------------------------------- timestamps


@pytest.mark.usefixtures("demo_data")
def test_occurred_at_out_of_range_is_invalid_argument(stub: Stub, client: redis.Redis) -> None:
    d = decide(stub, "C-1007")
    offer = d.offers[0].offer_id
    cases = [
        Timestamp(seconds=10**12),
        Timestamp(seconds=-(10**12)),
        Timestamp(seconds=2**62),
        Timestamp(seconds=int(time.time()), nanos=-1),
        Timestamp(seconds=int(time.time()), nanos=1_000_000_000),
        Timestamp(seconds=0),
        Timestamp(seconds=915_148_800),  # 1999-01-01
        Timestamp(seconds=int(time.time()) - 2 * 86_400),  # two days before the decision
    ]
    for ts in cases:
        with pytest.raises(grpc.RpcError) as caught:
            record(stub, d.decision_id, offer, pb.OUTCOME_ACCEPTED, occurred_at=ts)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (ts, caught.value)
        assert caught.value.details().startswith("occurred_at:"), caught.value.details()
    assert client.xlen(OUTCOME_STREAM) == 0
    ok = Timestamp(seconds=int(time.time()))
    assert not record(stub, d.decision_id, offer, pb.OUTCOME_ACCEPTED, occurred_at=ok).duplicate
