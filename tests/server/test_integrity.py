"""What a client (or an old tool writing to Redis) can do to other calls: ids that
poison stored history, re-spelled decision ids, timestamps out of range, and one
customer draining what is shared. Real redis-server, real `serve` processes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.keys import (
    OFFER_STATS,
    OUTCOME_STREAM,
    cap_key,
    contacts_key,
    history_key,
    profile_key,
)
from decision_engine.store.profiles import cap_day
from tests.server.conftest import RULES, Server, start_server
from tests.server.test_outcomes import (
    DEVICE,
    UPGRADE,
    Stub,
    decide,
    load_upgrade_population,
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


# --------------------------------------------------------------------------- decision ids


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def respellings(decision_id: str) -> list[str]:
    """Thirty other spellings of the same bytes: padding, and unused low bits of the
    last character of the signature (22 characters for 16 bytes: 4 bits unused)."""
    body, _, signature = decision_id.partition(".")
    padded = [
        f"{body}{'=' * b}.{signature}{'=' * s}"
        for b in range(4)
        for s in range(4)
        if (b, s) != (0, 0)
    ]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1]) & ~0b1111
    bits = [
        f"{body}.{signature[:-1]}{alphabet[last | low]}"
        for low in range(16)
        if alphabet[last | low] != signature[-1]
    ]
    spellings = padded + bits
    assert len(spellings) == 30 and decision_id not in spellings
    return spellings


@pytest.mark.usefixtures("demo_data")
def test_a_respelled_decision_id_is_not_a_new_decision(stub: Stub, client: redis.Redis) -> None:
    """Regression: 30 of 30 re-spellings of one decision id were counted as new outcomes."""
    d = decide(stub, "C-1007")
    offer = d.offers[0].offer_id
    assert not record(stub, d.decision_id, offer, pb.OUTCOME_DECLINED).duplicate
    for spelling in respellings(d.decision_id):
        with pytest.raises(grpc.RpcError) as caught:
            record(stub, spelling, offer, pb.OUTCOME_DECLINED)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, spelling
    assert client.xlen(OUTCOME_STREAM) == 1
    assert client.hget(OFFER_STATS, f"{offer}|declined") == "1"
    assert record(stub, d.decision_id, offer, pb.OUTCOME_DECLINED).duplicate


@pytest.mark.usefixtures("demo_data")
def test_garbled_and_foreign_decision_ids_are_not_found(stub: Stub, client: redis.Redis) -> None:
    d = decide(stub, "C-1007")
    offer = d.offers[0].offer_id
    body, _, signature = d.decision_id.partition(".")
    garbled = [
        "x", ".", "..", "a.b", f"{body}.", f".{signature}", f"{body}.{signature}.{signature}",
        f"{body[:-1]}.{signature}", f"{body}.{signature[:-2]}", "=" * 40, "A" * 4096,
        _b64(b"\xff\xfe") + "." + signature, f"{body}.{_b64(b'x' * 32)}",
    ]  # fmt: skip
    for bad in garbled:
        with pytest.raises(grpc.RpcError) as caught:
            record(stub, bad, offer, pb.OUTCOME_DECLINED)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, (bad, caught.value.details())
    assert client.xlen(OUTCOME_STREAM) == 0


SECRET = "integrity-test-secret"


@pytest.fixture
def secret_server(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Server]:
    srv = start_server(
        tmp_path,
        "--rules", str(RULES), "--redis-url", redis_server.url,
        workers=1,
        env={"DECISION_ENGINE_DECISION_SECRET": SECRET},
    )  # fmt: skip
    yield srv
    assert srv.stop() == 0, srv.log()


def signed(payload: object) -> str:
    """A decision id this deployment signed, for a payload of any shape."""
    raw = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
    mac = hmac.new(SECRET.encode(), raw, hashlib.sha256).digest()[:16]
    return f"{_b64(raw)}.{_b64(mac)}"


@pytest.mark.usefixtures("demo_data")
def test_a_signed_payload_of_the_wrong_shape_is_not_found(
    secret_server: Server, client: redis.Redis
) -> None:
    now = round(time.time(), 3)
    good = ["C-1007", [UPGRADE], "", "voice", "v", "champion", now, "abc"]
    wrong = [
        b"not json", b"\xff\xfe", {"a": 1}, "text", 7, None, [], good[:-1], [*good, "extra"],
        [1, *good[1:]], ["C-1007", UPGRADE, *good[2:]], ["C-1007", [1], *good[2:]],
        [*good[:6], "yesterday", "abc"], [*good[:6], None, "abc"], [*good[:6], True, "abc"],
        [*good[:6], float("nan"), "abc"], [*good[:6], 1e400, "abc"], [*good[:7], 5],
        ["{C}", *good[1:]],
    ]  # fmt: skip
    for stub in secret_server.stub():
        assert not record(stub, signed(good), UPGRADE, pb.OUTCOME_PRESENTED).duplicate
        for payload in wrong:
            with pytest.raises(grpc.RpcError) as caught:
                record(stub, signed(payload), UPGRADE, pb.OUTCOME_PRESENTED)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND, (payload, caught.value)
    assert client.xlen(OUTCOME_STREAM) == 1


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


# --------------------------------------------------------------------------- bounded harm


@pytest.mark.usefixtures("demo_data")
def test_contacts_recorded_per_customer_and_day_are_bounded(
    server: Server, stub: Stub, client: redis.Redis
) -> None:
    before = metric(scrape(server), "contacts_not_recorded_total")
    for n in range(30):
        decide(stub, "C-1007", interaction_id=f"flood-{n}")
    assert client.hlen(contacts_key("C-1007")) == 20
    assert metric(scrape(server), "contacts_not_recorded_total") - before == 10
    # An interaction already recorded is still a retry, not a new contact.
    decide(stub, "C-1007", interaction_id="flood-3")
    assert client.hlen(contacts_key("C-1007")) == 20


@pytest.mark.usefixtures("demo_data")
def test_contacts_of_customers_without_a_profile_are_kept_briefly(
    stub: Stub, client: redis.Redis
) -> None:
    for n in range(50):
        decide(stub, f"made-up-{n}", interaction_id="call-1")
    ttls = [client.ttl(contacts_key(f"made-up-{n}")) for n in range(50)]
    assert all(0 < ttl <= 3600 for ttl in ttls), ttls[:5]
    # A customer with a profile keeps them for the contact retention.
    decide(stub, "C-1007", interaction_id="call-1")
    assert client.ttl(contacts_key("C-1007")) > 29 * 86_400


def test_one_customer_cannot_drain_a_daily_cap(server: Server, client: redis.Redis) -> None:
    """Regression: one caller on one customer took 497 of device-upgrade's 500 units."""
    customers = load_upgrade_population(client, 3)
    day = cap_day(time.time())
    shown = 0
    for _ in range(10):
        for s in server.stub():
            shown += DEVICE in offer_ids(decide(s, customers[0]))
    assert shown == 1
    assert client.get(cap_key(DEVICE, day)) == "1"
    for s in server.stub():
        r = decide(s, customers[0], explain=True)
        (why,) = [e for e in r.explanations if e.rule_id == DEVICE]
        assert not why.matched and "per customer" in why.detail, why
    # Everyone else still gets their unit.
    for other in customers[1:]:
        for s in server.stub():
            assert DEVICE in offer_ids(decide(s, other))
    assert client.get(cap_key(DEVICE, day)) == "3"
