"""Business events become notices on the outbox, once, and the next Decide knows:
PublishEvent → events stream → notice processor → outbox + the customer's notice log."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import redis

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine.decide.notices import BusinessEvent
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.server.auth import Authenticator, TokenFile
from decision_engine.server.notice_loop import NoticeProcessor
from decision_engine.store.connection import PipelinedConnection
from decision_engine.store.keys import (
    EVENTS_REJECTED,
    EVENTS_STREAM,
    NOTICE_HELD,
    NOTICE_OUTBOX,
    audience_key,
    notice_log_key,
)
from decision_engine.store.notices import publish
from tests.server.conftest import RULES, load_demo
from tests.server.credentials import bearer, token_line
from tests.server.in_process import InProcess, in_process_server

T = TypeVar("T")
RULESET = load_compiled(RULES)
# 12:00 in Amsterdam in winter: outside the demo's quiet hours.
NOON = datetime(2026, 1, 14, 11, 0, tzinfo=UTC).timestamp()


@dataclass
class Fixed:
    current: CompiledRuleset


def run(make: Callable[[PipelinedConnection], Awaitable[T]], url: str) -> T:
    async def main() -> T:
        connection = PipelinedConnection(url)
        try:
            return await make(connection)
        finally:
            await connection.aclose()

    return asyncio.run(main())


async def process_all(
    url: str,
    *,
    consumer: str = "test-0",
    batch: int = 20,
    clock: Callable[[], float] = lambda: NOON,
) -> int:
    """Run a processor until the stream has nothing new for it; entries processed."""
    decision, reader = PipelinedConnection(url), PipelinedConnection(url)
    processor = NoticeProcessor(
        Fixed(RULESET), decision=decision, durable=decision, reader=reader,
        consumer=consumer, block_ms=50, batch=batch, clock=clock,
    )  # fmt: skip
    total = 0
    try:
        while n := await processor.step():
            total += n
    finally:
        await decision.aclose()
        await reader.aclose()
    return total


def outbox(url: str) -> list[dict[str, str]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    return [fields for _, fields in client.xrange(NOTICE_OUTBOX)]


def card_event(event_id: str = "fraud-1", customer: str = "C-1001") -> BusinessEvent:
    return BusinessEvent(event_id, "card_compromised", NOON, {"card_last4": "4242"}, customer)


@pytest.fixture
def demo(redis_url: str) -> str:
    load_demo(redis_url, generated=0)
    return redis_url


def test_an_event_becomes_one_notice_on_the_outbox_and_in_the_notice_log(demo: str) -> None:
    statuses = run(lambda c: publish(c, [card_event()], now=time.time()), demo)
    assert statuses == ["accepted"]

    assert asyncio.run(process_all(demo)) == 1

    (entry,) = outbox(demo)
    # Urgent, SMS first whatever Alice prefers (voice), her number and the card in the text.
    assert (entry["notice_id"], entry["channel"]) == ("card_compromised", "sms")
    assert entry["address"] == "+31 6 1000 1001"
    assert "4242" in entry["text"] and "Alice" in entry["text"]
    assert entry["key"] == "fraud-1/card_compromised/C-1001/sms"
    client = redis.Redis.from_url(demo, decode_responses=True)
    log = json.loads(client.hget(notice_log_key("C-1001"), "card_compromised") or "{}")
    assert log["status"] == "queued" and log["channel"] == "sms"


def test_a_retried_event_and_a_second_event_about_the_same_card_send_nothing_more(
    demo: str,
) -> None:
    first = run(lambda c: publish(c, [card_event()], now=time.time()), demo)
    again = run(lambda c: publish(c, [card_event()], now=time.time()), demo)
    other = run(lambda c: publish(c, [card_event("fraud-2")], now=time.time()), demo)

    asyncio.run(process_all(demo))

    assert (first, again, other) == (["accepted"], ["duplicate"], ["accepted"])
    # fraud-2 is about the same card (dedupe key {card_last4}) within 7 days.
    assert [e["key"] for e in outbox(demo)] == ["fraud-1/card_compromised/C-1001/sms"]


def test_an_audience_event_reaches_every_customer_of_the_postcode_once(demo: str) -> None:
    client = redis.Redis.from_url(demo, decode_responses=True)
    members = client.smembers(audience_key("postcode", "1011"))
    assert members == {"C-1001", "C-1002", "C-1004", "C-1007"}
    event = BusinessEvent(
        "outage-7", "service_outage", NOON, {"outage_id": "o-7"}, audience=("postcode", "1011")
    )
    run(lambda c: publish(c, [event], now=time.time()), demo)

    asyncio.run(process_all(demo))

    held = [json.loads(m) for m in client.zrange(NOTICE_HELD, 0, -1)]
    # At noon in Amsterdam: Grace, in New York, is in her quiet hours (06:00).
    assert [e["customer_id"] for e in held] == ["C-1007"]
    sent = outbox(demo) + held
    by_customer = {e["customer_id"]: e["channel"] for e in sent}
    # Alice: sms (her preferred voice is not a notice channel); Bob: app (sms refused);
    # Dan: sms; Grace: app. Each exactly once.
    assert by_customer == {"C-1001": "sms", "C-1002": "app", "C-1004": "sms", "C-1007": "app"}
    assert len(sent) == 4


def test_a_moved_customer_leaves_the_audience_of_the_old_postcode(demo: str) -> None:
    async def move(connection: PipelinedConnection) -> None:
        from decision_engine.store.profiles import ProfileStore

        store = ProfileStore.from_url(demo)
        try:
            await store.put_profiles([("C-1004", {"postcode": "9999"})], audiences=("postcode",))
        finally:
            await store.aclose()

    run(move, demo)

    client = redis.Redis.from_url(demo, decode_responses=True)
    assert "C-1004" not in client.smembers(audience_key("postcode", "1011"))
    assert client.smembers(audience_key("postcode", "9999")) == {"C-1004"}


def test_concurrent_processors_keep_the_daily_cap_of_a_customer(demo: str) -> None:
    # Eva may get 2 non-urgent notices a day; 5 payment_failed events (distinct due dates)
    # processed by 3 processors at once must queue exactly 2.
    events = [
        BusinessEvent(
            f"pay-{n}",
            "payment_failed",
            NOON,
            {"amount": "10", "due_date": f"2026-01-0{n}"},
            "C-1005",
        )
        for n in range(1, 6)
    ]
    run(lambda c: publish(c, events, now=time.time()), demo)

    async def three() -> list[int]:
        # One event at a time each, so the three read Eva's notices at the same moment.
        runs = (process_all(demo, consumer=f"p{i}", batch=1) for i in range(3))
        return await asyncio.gather(*runs)

    assert sum(asyncio.run(three())) == 5
    client = redis.Redis.from_url(demo, decode_responses=True)
    queued = outbox(demo) + [json.loads(m) for m in client.zrange(NOTICE_HELD, 0, -1)]
    assert len(queued) == 2


def test_a_bad_entry_written_to_the_stream_by_a_producer_is_set_aside_with_the_reason(
    demo: str,
) -> None:
    client = redis.Redis.from_url(demo, decode_responses=True)

    def entry(event_id: str, attributes: str) -> dict[str, str]:
        return {"event_id": event_id, "type": "card_compromised", "customer_id": "C-1001",
                "attributes": attributes}  # fmt: skip

    client.xadd(EVENTS_STREAM, entry("x-1", '{"pin": "1234"}'))  # type: ignore[arg-type]
    client.xadd(EVENTS_STREAM, entry("x-2", '{"card_last4": "1111"}'))  # type: ignore[arg-type]
    client.xadd(EVENTS_STREAM, entry("x-2", '{"card_last4": "1111"}'))  # type: ignore[arg-type]

    assert asyncio.run(process_all(demo)) == 3

    ((_, rejected),) = client.xrange(EVENTS_REJECTED)
    assert rejected["event_id"] == "x-1"
    assert "attributes[pin]: is not declared for card_compromised" in rejected["reason"]
    # The good one counts once, though the producer wrote it twice.
    assert [e["event_id"] for e in outbox(demo)] == ["x-2"]
    assert client.xpending(EVENTS_STREAM, "notices")["pending"] == 0


def test_publish_event_checks_every_field_against_the_declared_events(redis_url: str) -> None:
    async def main(server: InProcess) -> list[tuple[grpc.StatusCode, str]]:
        bad = [
            pb.BusinessEvent(event_id="e1", type="card_stolen", customer_id="C-1"),
            pb.BusinessEvent(event_id="e1", type="card_compromised"),
            pb.BusinessEvent(
                event_id="e1", type="service_outage", customer_id="C-1",
                audience=pb.Audience(field="postcode", value="1011"),
            ),
            pb.BusinessEvent(
                event_id="e1", type="service_outage",
                audience=pb.Audience(field="city", value="Amsterdam"),
            ),
            pb.BusinessEvent(
                event_id="e1", type="payment_failed", customer_id="C-1",
                attributes={"amount": "lots"},
            ),
            pb.BusinessEvent(event_id="", type="payment_failed", customer_id="C-1"),
        ]  # fmt: skip
        out = []
        for message in bad:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await server.notices.PublishEvent(message)
            out.append((refused.value.code(), refused.value.details() or ""))
        return out

    results = asyncio.run(_with_server(redis_url, main))

    assert {code for code, _ in results} == {grpc.StatusCode.INVALID_ARGUMENT}
    details = [d for _, d in results]
    assert details[0].startswith("type: 'card_stolen' is not a declared event type")
    assert details[1] == "customer_id: give exactly one of customer_id and audience"
    assert details[2] == "customer_id: give exactly one of customer_id and audience"
    assert details[3].startswith("audience.field: 'city' is not an audience field")
    assert details[4] == "attributes[amount]: 'lots' is not a number"
    assert details[5] == "event_id: is required"
    client = redis.Redis.from_url(redis_url)
    assert client.xlen(EVENTS_STREAM) == 0  # nothing stored


def test_publish_and_process_and_the_next_decide_goes_to_card_security(demo: str) -> None:
    async def main(server: InProcess) -> tuple[Any, Any, Any]:
        reply = await server.notices.PublishEvent(
            pb.BusinessEvent(
                event_id="fraud-9", type="card_compromised", customer_id="C-1003",
                attributes={"card_last4": "9999"},
            )
        )  # fmt: skip
        await process_all(demo, clock=time.time)  # Decide reads the real clock
        decided = await server.stub.Decide(
            pb.DecideRequest(
                customer_id="C-1003",
                context=pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="general_inquiry"),
            )
        )
        again = await server.notices.PublishEvent(
            pb.BusinessEvent(
                event_id="fraud-9", type="card_compromised", customer_id="C-1003",
                attributes={"card_last4": "9999"},
            )
        )  # fmt: skip
        return reply, decided, again

    reply, decided, again = asyncio.run(_with_server(demo, main))

    assert reply.status == pb.EVENT_STATUS_ACCEPTED
    assert again.status == pb.EVENT_STATUS_DUPLICATE
    assert decided.routing.rule_id == "card-compromised-notified"
    assert decided.routing.queue == "card_security" and decided.routing.skip_ivr
    (notice,) = decided.notices
    # Chloe has no phone: the app, her first allowed channel with an address.
    assert (notice.notice_id, notice.channel, notice.status) == (
        "card_compromised",
        "app",
        "queued",
    )
    assert "9999" in notice.text


def test_a_desktop_may_not_publish_business_events(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(token_line("desk-token", "desktop") + token_line("feed-token", "publisher"))
    authenticator = Authenticator(tokens=TokenFile(path))
    tokens = {"desk": bearer("desk-token"), "feed": bearer("feed-token")}

    async def main(server: InProcess) -> tuple[grpc.StatusCode, pb.EventStatus.ValueType]:
        event = pb.BusinessEvent(
            event_id="p-1", type="card_compromised", customer_id="C-1",
            attributes={"card_last4": "1234"},
        )  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await server.notices.PublishEvent(event, metadata=tokens["desk"])
        ok = await server.notices.PublishEvent(event, metadata=tokens["feed"])
        return refused.value.code(), ok.status

    code, status = asyncio.run(_with_server(redis_url, main, authenticator=authenticator))

    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert status == pb.EVENT_STATUS_ACCEPTED


async def _with_server(
    url: str,
    body: Callable[[InProcess], Awaitable[T]],
    *,
    authenticator: Authenticator | None = None,
) -> T:
    async with in_process_server(url, authenticator=authenticator) as server:
        return await body(server)


def test_the_key_date_sweep_raises_each_due_contract_once_and_only_once_a_day(demo: str) -> None:
    from decision_engine.store.key_dates import claim_sweep, finish_sweep, sweep

    async def twice(connection: PipelinedConnection) -> tuple[Any, Any, str | None, str | None]:
        now = time.time()
        day = await claim_sweep(connection, "replica-a", now=now)
        other = await claim_sweep(connection, "replica-b", now=now)  # a's lock is held
        first = await sweep(connection, connection, RULESET, now=now)
        assert day is not None
        await finish_sweep(connection, "replica-a", day)
        again = await sweep(connection, connection, RULESET, now=now)  # by hand, same day
        later = await claim_sweep(connection, "replica-b", now=now)  # done for today
        return first, again, other, later

    first, again, other, later = run(twice, demo)

    # The demo's contracts end in 30 (Eva), 150 (Bob), 200+ days: Eva's is due (<= 60).
    assert (first.raised, again.raised, again.duplicates) == (1, 0, 1)
    assert first.profiles >= 7
    assert (other, later) == (None, None)
    asyncio.run(process_all(demo))
    (entry,) = outbox(demo)
    assert (entry["notice_id"], entry["customer_id"], entry["channel"]) == (
        "renewal_offer", "C-1005", "email",
    )  # fmt: skip
    assert "Your contract ends on" in entry["subject"]


def test_a_large_audience_is_split_into_pages_that_processes_share(redis_url: str) -> None:
    load_demo(redis_url, generated=1200)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    everyone = [f"C-{n:06d}" for n in range(1, 1201)]
    client.sadd(audience_key("postcode", "9999"), *everyone)
    event = BusinessEvent(
        "outage-big", "service_outage", NOON, {"outage_id": "o-9"}, audience=("postcode", "9999")
    )
    run(lambda c: publish(c, [event], now=time.time()), redis_url)

    async def two() -> list[int]:
        runs = (process_all(redis_url, consumer=f"p{i}", batch=1) for i in range(2))
        return await asyncio.gather(*runs)

    # The event, then its pages (of about 500: SSCAN's COUNT is a hint), taken by both.
    counts = asyncio.run(two())
    pages = [json.loads(f["customers"]) for _, f in client.xrange(EVENTS_STREAM)
             if "customers" in f]  # fmt: skip
    assert len(pages) >= 3 and sum(counts) == 1 + len(pages) and min(counts) >= 1
    assert sorted(c for page in pages for c in page) == sorted(everyone)
    decided = outbox(redis_url) + [json.loads(m) for m in client.zrange(NOTICE_HELD, 0, -1)]
    customers = [d["customer_id"] for d in decided]
    assert len(customers) == len(set(customers)) > 900  # once each (some have no consent)
    assert client.xpending(EVENTS_STREAM, "notices")["pending"] == 0


def test_a_page_entry_that_is_not_a_list_of_customers_is_set_aside(demo: str) -> None:
    client = redis.Redis.from_url(demo, decode_responses=True)
    client.xadd(EVENTS_STREAM, {"event_id": "p-1", "type": "service_outage", "customers": "[1]",
                                "attributes": '{"outage_id": "o"}'})  # fmt: skip

    assert asyncio.run(process_all(demo)) == 1
    ((_, rejected),) = client.xrange(EVENTS_REJECTED)
    assert rejected["reason"] == "customers: not a list of customer ids"
