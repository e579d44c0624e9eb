"""Crafted and random bytes against a real server: never UNKNOWN or INTERNAL, and it
still answers correctly afterwards."""

from __future__ import annotations

import base64
import math
import random
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine.server.decision_ids import DecisionIds
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.outcomes import DecisionRecord
from tests.server.conftest import RULES, Server, load_demo, start_server

DECISION = "/decision.v1.DecisionService/"
ADMIN = "/decision.v1.AdminService/GetRuleset"
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


@pytest.fixture(scope="module")
def fuzzed(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    load_demo(redis_server.url)
    server = start_server(
        tmp_path_factory.mktemp("fuzz"),
        "--rules", str(RULES), "--redis-url", redis_server.url, workers=1,
    )  # fmt: skip
    yield server
    assert server.stop() == 0, server.log()


def _valid_decide(customer: str = "C-000042") -> pb.DecideRequest:
    """Fuzzed requests start from a synthetic customer: bit flips of its id cannot reach
    the demo customer whose answer is compared before and after."""
    return pb.DecideRequest(
        customer_id=customer,
        interaction_id="i-fuzz",
        context=pb.InteractionContext(
            channel=pb.CHANNEL_VOICE, intent="cancel", sentiment=-0.2, attributes={"a": "b"}
        ),
        max_offers=3,
    )


def _valid_outcome(decision_id: str, offer_id: str = "") -> pb.RecordOutcomeRequest:
    request = pb.RecordOutcomeRequest(
        decision_id=decision_id, offer_id=offer_id or "retention-loyalty-credit",
        outcome=pb.OUTCOME_PRESENTED, reason="fuzz",
    )  # fmt: skip
    request.occurred_at.FromSeconds(1_700_000_000)
    return request


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _respell(decision_id: str) -> list[str]:
    body, _, mac = decision_id.partition(".")
    std = base64.b64encode(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))).decode()
    return [
        decision_id + "=", decision_id + "==", f"{body}=.{mac}", f"{body}.{mac}=",
        f"{body[:4]}={body[4:]}.{mac}", f"{std}.{mac}", f" {decision_id}", decision_id.upper(),
        decision_id[:-1], decision_id + "A", body, f"{body}..{mac}", "." + mac,
    ]  # fmt: skip


def cases(decision_id: str, offer_id: str, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """(method, request bytes): at least 2,000 of them."""
    methods = [DECISION + "Decide", DECISION + "RecordOutcome", DECISION + "Ping", ADMIN]
    decide, outcome = _valid_decide().SerializeToString(), _valid_outcome(decision_id, offer_id)
    outcome_bytes = outcome.SerializeToString()
    for _ in range(700):  # random bytes
        yield rng.choice(methods), rng.randbytes(rng.randrange(0, 300))
    for data, method in ((decide, "Decide"), (outcome_bytes, "RecordOutcome")):
        for cut in range(len(data)):  # truncations
            yield DECISION + method, data[:cut]
        for _ in range(450):  # bit flips
            mutated = bytearray(data)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
            yield DECISION + method, bytes(mutated)
    for number in range(1, 9):  # every wire type on every field, valid or not
        for wire in range(8):
            payload = {0: b"\x05", 1: b"\0" * 8, 2: b"\x03abc", 5: b"\0" * 4}.get(wire, b"")
            for method in methods:
                yield method, _field(number, wire, payload)
    bad_utf8 = b"\xff\xfe\xc3\x28"
    for number in (1, 2):
        yield DECISION + "Decide", _field(number, 2, _varint(len(bad_utf8)) + bad_utf8)
    for number in (1, 2, 5):
        yield DECISION + "RecordOutcome", _field(number, 2, _varint(len(bad_utf8)) + bad_utf8)
    for number in (2, 3, 4, 6):  # inside the context message
        inner = _field(number, 2, _varint(len(bad_utf8)) + bad_utf8)
        yield DECISION + "Decide", _field(3, 2, _varint(len(inner)) + inner)
    entry = _field(1, 2, b"\x02\xff\xfe") + _field(2, 2, b"\x01v")  # attribute key
    attr = _field(7, 2, _varint(len(entry)) + entry)
    yield DECISION + "Decide", _field(3, 2, _varint(len(attr)) + attr)
    yield DECISION + "Decide", b"\x1a" * 100_000  # deeply nested context messages
    for value in (math.nan, math.inf, -math.inf, 1e308, -2.0, 5e-324):
        request = _valid_decide()
        request.context.sentiment = value
        yield DECISION + "Decide", request.SerializeToString()
    for field in ("customer_id", "interaction_id"):
        for text in ("x" * 1_000_000, "x" * 129, "a;b|c", "{C-1001}", "a\nb", "\x00", " C-1001"):
            request = _valid_decide()
            setattr(request, field, text)
            yield DECISION + "Decide", request.SerializeToString()
    for size in (33, 10_000):
        request = _valid_decide()
        request.context.attributes.update({f"k{i}": "v" for i in range(size)})
        yield DECISION + "Decide", request.SerializeToString()
    request = _valid_decide()
    request.context.intent = "i" * 1_000_000
    yield DECISION + "Decide", request.SerializeToString()
    request = _valid_decide()
    request.max_offers = 2**32 - 1
    yield DECISION + "Decide", request.SerializeToString()
    foreign = DecisionIds(b"another deployment", ttl_s=86400).issue(
        DecisionRecord(
            "", "C-1001", ("retention-loyalty-credit",), "", "voice", "v", "champion", 1.7e9
        )
    )
    for spelled in [*_respell(decision_id), foreign, "x" * 5000, "a.b", "", "🙂.🙂"]:
        yield DECISION + "RecordOutcome", _valid_outcome(spelled).SerializeToString()
    out_of_range = [(2**62, 0), (-(2**62), 0), (253402300800, 0), (-62135596801, 0),
                    (1_700_000_000, -1), (1_700_000_000, 2_000_000_000), (0, 0)]  # fmt: skip
    for seconds, nanos in out_of_range:
        request = _valid_outcome(decision_id)
        request.occurred_at.seconds, request.occurred_at.nanos = seconds, nanos
        yield DECISION + "RecordOutcome", request.SerializeToString()
    for value in (99, -1, 2**31 - 1):
        request = _valid_outcome(decision_id)
        request.outcome = value  # type: ignore[assignment]
        yield DECISION + "RecordOutcome", request.SerializeToString()
        request = _valid_outcome(decision_id)
        request.channel = value  # type: ignore[assignment]
        yield DECISION + "RecordOutcome", request.SerializeToString()


def _typed(channel: grpc.Channel, method: str, reply: type[Message]) -> Any:
    return channel.unary_unary(
        DECISION + method,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=reply.FromString,
    )


Bad = list[tuple[str, bytes, grpc.StatusCode, str]]


def _send(
    channel: grpc.Channel, method: str, data: bytes, codes: Counter[grpc.StatusCode], bad: Bad
) -> None:
    """One fuzzed call: its status counted, and kept in `bad` when it is one of NEVER."""
    try:
        if method.endswith("WatchGuidance"):
            # A watch that parses follows an interaction nobody publishes to.
            list(channel.unary_stream(method)(data, timeout=0.5))
        else:
            channel.unary_unary(method)(data, timeout=10)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    codes[code] += 1
    if code in NEVER:
        bad.append((method, data[:60], code, details))


def test_fuzz_never_unknown_or_internal(fuzzed: Server) -> None:
    rng = random.Random(20261201)
    with fuzzed.channel() as channel:
        decide = _typed(channel, "Decide", pb.DecideResponse)
        alice = pb.DecideRequest(
            customer_id="C-1001",
            context=pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="cancel"),
        )
        before = decide(alice, timeout=10)
        first = decide(_valid_decide(), timeout=10)
        codes: Counter[grpc.StatusCode] = Counter()
        bad: Bad = []
        assert first.offers, "the fuzzed customer gets offers"
        for method, data in cases(first.decision_id, first.offers[0].offer_id, rng):
            _send(channel, method, data, codes, bad)
        assert sum(codes.values()) >= 2000, codes
        assert not bad, f"{len(bad)} of {sum(codes.values())}: {bad[:10]}"
        assert codes[grpc.StatusCode.INVALID_ARGUMENT] > 500, codes
        # Still correct afterwards: the same customer, the same answer.
        after = decide(alice, timeout=10)
        assert after.routing.queue == before.routing.queue == "retention_specialists"
        assert [o.offer_id for o in after.offers] == [o.offer_id for o in before.offers]
    log = fuzzed.log()
    assert "Traceback" not in log, log[-3000:]


def test_out_of_range_timestamps_name_the_field(fuzzed: Server) -> None:
    with fuzzed.channel() as channel:
        decide = _typed(channel, "Decide", pb.DecideResponse)
        record = _typed(channel, "RecordOutcome", pb.RecordOutcomeResponse)
        decision_id = decide(_valid_decide(), timeout=10).decision_id
        for seconds, nanos in ((2**62, 0), (-(2**62), 0), (1_700_000_000, 2_000_000_000)):
            request = _valid_outcome(decision_id)
            request.occurred_at.seconds, request.occurred_at.nanos = seconds, nanos
            with pytest.raises(grpc.RpcError) as raised:
                record(request, timeout=10)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert re.match(r"occurred_at: ", raised.value.details() or "")


GUIDANCE = "/decision.v1.GuidanceService/"


def _valid_publish(interaction: str, n: int) -> pb.PublishEventsRequest:
    event = pb.InteractionEvent(event_id=f"{interaction}-e{n}", interaction_id=interaction)
    event.occurred_at.GetCurrentTime()
    event.utterance.CopyFrom(
        pb.Utterance(speaker=pb.SPEAKER_CUSTOMER, text="I want to cancel", keywords=["cancel"])
    )
    return pb.PublishEventsRequest(events=[event])


def guidance_cases(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """(method, request bytes) for the guidance calls: random, truncated, bit-flipped."""
    publish = _valid_publish("FZ-1", 0).SerializeToString()
    for _ in range(300):
        yield GUIDANCE + "PublishEvents", rng.randbytes(rng.randrange(0, 300))
        yield GUIDANCE + "WatchGuidance", rng.randbytes(rng.randrange(0, 40))
    for cut in range(len(publish)):
        yield GUIDANCE + "PublishEvents", publish[:cut]
    for _ in range(400):
        mutated = bytearray(publish)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        yield GUIDANCE + "PublishEvents", bytes(mutated)
    yield GUIDANCE + "PublishEvents", b"\x0a" * 100_000  # deeply nested events


def test_fuzz_of_the_guidance_calls_never_unknown_or_internal(fuzzed: Server) -> None:
    rng = random.Random(20261202)
    codes: Counter[grpc.StatusCode] = Counter()
    bad: Bad = []
    with fuzzed.channel() as channel:
        for method, data in guidance_cases(rng):
            _send(channel, method, data, codes, bad)
        assert sum(codes.values()) >= 1000, codes
        assert not bad, f"{len(bad)} of {sum(codes.values())}: {bad[:10]}"
        assert codes[grpc.StatusCode.INVALID_ARGUMENT] > 300, codes
        # Still correct afterwards: a good event is stored once, a retry is a duplicate.
        publish = channel.unary_unary(
            GUIDANCE + "PublishEvents",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.PublishEventsResponse.FromString,
        )
        first = publish(_valid_publish("FZ-after", 1), timeout=10)
        again = publish(_valid_publish("FZ-after", 1), timeout=10)
        assert first.events[0].status != again.events[0].status
        assert again.events[0].status == pb.PUBLISH_STATUS_DUPLICATE
    assert "Traceback" not in fuzzed.log(), fuzzed.log()[-3000:]


NOTICES = "/decision.v1.NoticeService/"


def notice_cases(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """(method, request bytes) for the business-event calls: random, truncated, bit-flipped."""
    event = pb.BusinessEvent(
        event_id="FZ-card", type="card_compromised", customer_id="C-1001",
        attributes={"card_last4": "4242"},
    ).SerializeToString()  # fmt: skip
    batch = pb.PublishBusinessEventsRequest(
        events=[pb.BusinessEvent.FromString(event)]
    ).SerializeToString()
    for _ in range(200):
        yield NOTICES + "PublishEvent", rng.randbytes(rng.randrange(0, 200))
        yield NOTICES + "PublishBusinessEvents", rng.randbytes(rng.randrange(0, 200))
        yield NOTICES + "RecordNoticeReceipt", rng.randbytes(rng.randrange(0, 80))
    for method, valid in (("PublishEvent", event), ("PublishBusinessEvents", batch)):
        for cut in range(len(valid)):
            yield NOTICES + method, valid[:cut]
        for _ in range(200):
            mutated = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
            yield NOTICES + method, bytes(mutated)


def test_fuzz_of_the_notice_calls_never_unknown_or_internal(fuzzed: Server) -> None:
    rng = random.Random(20261203)
    codes: Counter[grpc.StatusCode] = Counter()
    bad: Bad = []
    with fuzzed.channel() as channel:
        for method, data in notice_cases(rng):
            _send(channel, method, data, codes, bad)
        assert sum(codes.values()) >= 1000, codes
        assert not bad, f"{len(bad)} of {sum(codes.values())}: {bad[:10]}"
        assert codes[grpc.StatusCode.INVALID_ARGUMENT] > 300, codes
    assert "Traceback" not in fuzzed.log(), fuzzed.log()[-3000:]
