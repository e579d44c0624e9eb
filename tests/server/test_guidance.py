"""Live guidance in process: the GuidanceService that `create_server` registers, on the
real Redis, with a moment loop beside it (the test detector of tests/server/detectors.py
in place of the moment engine)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine.ruleset.compiled import load_compiled
from decision_engine.server.auth import Authenticator, TokenFile
from decision_engine.server.limits import ServerLimits
from decision_engine.store.connection import PipelinedConnection
from decision_engine.store.interactions import MOMENT_SHARDS
from decision_engine.store.work_queue import consumer_name, pending_count, read_work
from tests.server.conftest import RULES
from tests.server.credentials import token_line
from tests.server.in_process import InProcess, in_process_server, running_moments
from tests.server.interaction_events import base, ended, hold, said, started

T = TypeVar("T")
pytestmark = pytest.mark.usefixtures("demo_data")


def run(redis_url: str, scenario: Callable[[InProcess], Awaitable[T]], **kw: object) -> T:
    async def main() -> T:
        async with in_process_server(redis_url, **kw) as served:  # type: ignore[arg-type]
            return await scenario(served)

    return asyncio.run(main())


async def publish(served: InProcess, *events: pb.InteractionEvent) -> pb.PublishEventsResponse:
    return await served.guidance.PublishEvents(  # type: ignore[no-any-return]
        pb.PublishEventsRequest(events=events), timeout=5
    )


async def watch(served: InProcess, interaction: str, after: int = 0) -> list[pb.Guidance]:
    """Everything the watch sends until it ends (the interaction's guidance ended)."""
    call = served.guidance.WatchGuidance(
        pb.WatchGuidanceRequest(interaction_id=interaction, after_seq=after), timeout=30
    )
    return [item async for item in call]


def test_events_in_guidance_out_with_a_fresh_decision(redis_url: str) -> None:
    async def scenario(served: InProcess) -> tuple[list[pb.Guidance], list[pb.Guidance]]:
        async with running_moments(redis_url, served):
            reply = await publish(
                served,
                started("CALL-1"),
                said("CALL-1", "e2", "hello there"),
                said("CALL-1", "e3", "I want to cancel my contract"),
                ended("CALL-1"),
            )
            assert [(e.status, e.seq) for e in reply.events] == [
                (pb.PUBLISH_STATUS_ACCEPTED, n) for n in (1, 2, 3, 4)
            ]
            everything = await watch(served, "CALL-1")
            return everything, await watch(served, "CALL-1", after=2)

    everything, after_two = run(redis_url, scenario)
    assert [(g.seq, g.guidance_id, g.moment_id) for g in everything] == [
        (1, "CALL-1:heard:2", "heard"),
        (2, "CALL-1:retention:3", "retention"),
        (3, "CALL-1:survey", "survey"),
    ]
    heard, retention, survey = everything
    assert not heard.HasField("decision") and heard.kind == pb.GUIDANCE_KIND_COACHING
    # The moment saw the customer's profile (started), and asked for a decision: the
    # interaction's context with intent cancel, decided like Decide decides.
    assert retention.text == "Alice: I want to cancel my contract"
    assert retention.kind == pb.GUIDANCE_KIND_OFFER and retention.severity == pb.SEVERITY_WARNING
    assert list(retention.event_ids) == ["e3"] and list(retention.supersedes) == ["heard"]
    decision = retention.decision
    assert decision.decision_id and decision.profile_found and decision.arm == "champion"
    assert decision.routing.queue == "retention_specialists"
    assert decision.offers[0].offer_id == "retention-loyalty-credit"
    assert (survey.routing.queue, survey.routing.priority) == ("survey_ivr", 5)
    assert survey.kind == pb.GUIDANCE_KIND_SURVEY and survey.interaction_id == "CALL-1"
    assert [g.seq for g in after_two] == [3]


def test_a_watch_follows_live_and_ends_with_the_interaction(redis_url: str) -> None:
    async def scenario(served: InProcess) -> list[tuple[int, str]]:
        async with running_moments(redis_url, served):
            await publish(served, started("CALL-2"))
            call = served.guidance.WatchGuidance(
                pb.WatchGuidanceRequest(interaction_id="CALL-2"), timeout=30
            )
            seen: list[tuple[int, str]] = []
            stream = aiter(call)
            for n in range(3):
                # Each item reaches the open watch after its event is published.
                await publish(served, said("CALL-2", f"u{n}", f"line {n}"))
                item = await anext(stream)
                seen.append((item.seq, item.text))
            await publish(served, ended("CALL-2"))
            seen.extend([(item.seq, item.text) async for item in stream])
            assert await call.code() == grpc.StatusCode.OK
            return seen

    assert run(redis_url, scenario) == [
        (1, "line 0"), (2, "line 1"), (3, "line 2"), (4, "Ask for 2 minutes"),
    ]  # fmt: skip


def test_guide_sends_events_and_streams_the_interactions_guidance(redis_url: str) -> None:
    async def scenario(served: InProcess) -> tuple[list[str], grpc.StatusCode, str]:
        async with running_moments(redis_url, served):
            got: list[str] = []
            heard = asyncio.Event()

            async def desktop() -> AsyncIterator[pb.InteractionEvent]:
                yield started("CALL-3")
                yield said("CALL-3", "g1", "please cancel")
                await heard.wait()  # the desktop speaks on after seeing guidance
                yield ended("CALL-3")

            call = served.guidance.Guide(desktop(), timeout=30)
            async for item in call:
                got.append(item.guidance_id)
                heard.set()

            # One interaction per Guide call.
            async def stray() -> AsyncIterator[pb.InteractionEvent]:
                yield started("CALL-4")
                yield said("CALL-5", "x1", "hi")

            bad = served.guidance.Guide(stray(), timeout=30)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                async for _ in bad:
                    pass
            return got, error.value.code(), error.value.details() or ""

    got, code, details = run(redis_url, scenario)
    assert got == ["CALL-3:retention:2", "CALL-3:survey"]
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("event.interaction_id: must be CALL-4")


def _bad(mutate: Callable[[pb.InteractionEvent], None]) -> pb.InteractionEvent:
    event = said("CALL-9", "b1", "hello")
    mutate(event)
    return event


NOW = time.time()
BAD_EVENTS = [
    (_bad(lambda e: setattr(e, "event_id", "")), "events[0].event_id: is required"),
    (_bad(lambda e: setattr(e, "interaction_id", "a{b}")), "events[0].interaction_id: may contain"),
    (_bad(lambda e: e.ClearField("occurred_at")), "events[0].occurred_at: is required"),
    (_bad(lambda e: e.occurred_at.FromSeconds(int(NOW) + 3600)), "events[0].occurred_at: is more"),
    (_bad(lambda e: e.occurred_at.FromSeconds(int(NOW) - 86_400)), "events[0].occurred_at: is mo"),
    (_bad(lambda e: e.ClearField("utterance")), "events[0].kind: is required"),
    (_bad(lambda e: setattr(e.utterance, "text", "x" * 4001)), "events[0].utterance.text: at most"),
    (_bad(lambda e: setattr(e.utterance, "text", "  ")), "events[0].utterance.text: is required"),
    (_bad(lambda e: e.utterance.ClearField("speaker")), "events[0].utterance.speaker: is required"),
    (_bad(lambda e: e.utterance.keywords.extend(["k"] * 33)), "events[0].utterance.keywords: at"),
    (_bad(lambda e: setattr(e, "seq", 0)), "events[0].seq: must be 1.."),
    (_bad(lambda e: e.sentiment.CopyFrom(pb.SentimentChanged(value=2.0, speaker=1))),
     "events[0].sentiment.value: must be -1..1, got 2.0"),
    (_bad(lambda e: e.silence.CopyFrom(pb.Silence(duration_s=-1))),
     "events[0].silence.duration_s: must be > 0"),
    (_bad(lambda e: e.agent_action.CopyFrom(pb.AgentActionTaken(action=1))),
     "events[0].agent_action.offer_id: is required"),
    (_bad(lambda e: e.started.CopyFrom(pb.InteractionStarted(customer_id="C-1"))),
     "events[0].started.channel: is required"),
]  # fmt: skip


def test_bad_events_are_invalid_argument_naming_the_field(redis_url: str) -> None:
    # An event of a newer client, whose kind this server does not know: the field number
    # is unknown here, so the oneof is unset.
    unknown_kind = base("CALL-9", "u1").SerializeToString() + bytes([0xFA, 0x01, 0x00])
    unknown = pb.InteractionEvent.FromString(unknown_kind)

    async def scenario(served: InProcess) -> list[tuple[grpc.StatusCode, str]]:
        out = []
        batches = [[event] for event, _ in BAD_EVENTS] + [
            [unknown],
            [],
            [said("C", "x", "y")] * 101,
        ]
        for batch in batches:
            try:
                await publish(served, *batch)
            except grpc.aio.AioRpcError as exc:
                out.append((exc.code(), exc.details() or ""))
            else:
                out.append((grpc.StatusCode.OK, ""))
        return out

    results = run(redis_url, scenario)
    expected = [message for _, message in BAD_EVENTS] + [
        "events[0].kind: is required", "events: at least one", "events: at most 100 per call",
    ]  # fmt: skip
    for (code, details), message in zip(results, expected, strict=True):
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (details, message)
        assert details.startswith(message), (details, message)


def test_the_interactions_state_refuses_events_with_failed_precondition(redis_url: str) -> None:
    async def scenario(served: InProcess) -> list[tuple[grpc.StatusCode, str]]:
        await publish(served, started("CALL-10", seq=5), ended("CALL-10"))
        out = []
        for event in (said("CALL-10", "late", "hello?"), said("CALL-11", "s1", "x", seq=1)):
            try:
                await publish(served, event)
                await publish(served, said("CALL-11", "s0", "y", seq=1))
            except grpc.aio.AioRpcError as exc:
                out.append((exc.code(), exc.details() or ""))
        return out

    (ended_code, ended_details), (stale_code, stale_details) = run(redis_url, scenario)
    assert ended_code == stale_code == grpc.StatusCode.FAILED_PRECONDITION
    assert ended_details.startswith("events[0]: interaction CALL-10 has ended")
    assert stale_details.startswith("events[0]: seq 1 is not after 1")


def test_events_before_started_are_held_then_fed_after_it(redis_url: str) -> None:
    async def scenario(served: InProcess) -> tuple[list[int], list[str]]:
        async with running_moments(redis_url, served):
            early = await publish(served, said("CALL-12", "early", "are you there?"))
            statuses = [e.status for e in early.events]
            later = await publish(served, started("CALL-12"), ended("CALL-12"))
            statuses += [e.status for e in later.events]
            return statuses, [g.guidance_id for g in await watch(served, "CALL-12")]

    statuses, guidance = run(redis_url, scenario)
    assert statuses == [
        pb.PUBLISH_STATUS_HELD,
        pb.PUBLISH_STATUS_ACCEPTED,
        pb.PUBLISH_STATUS_ACCEPTED,
    ]
    assert guidance == ["CALL-12:heard:1", "CALL-12:survey"]


def test_deadlines_fire_from_the_moment_loops_clock(redis_url: str) -> None:
    async def scenario(served: InProcess) -> list[str]:
        async with running_moments(redis_url, served):
            await publish(served, started("CALL-13"), hold("CALL-13", "h1"))
            call = served.guidance.WatchGuidance(
                pb.WatchGuidanceRequest(interaction_id="CALL-13"), timeout=30
            )
            first = await anext(aiter(call))  # no event after the hold: the deadline fires
            await publish(served, ended("CALL-13"))
            return [first.guidance_id] + [g.guidance_id async for g in call]

    assert run(redis_url, scenario) == ["CALL-13:long-hold:h1", "CALL-13:survey"]


def test_watches_are_bounded_per_worker(redis_url: str) -> None:
    async def scenario(served: InProcess) -> tuple[grpc.StatusCode, str]:
        open_call = served.guidance.WatchGuidance(
            pb.WatchGuidanceRequest(interaction_id="CALL-14"), timeout=30
        )
        await open_call.initial_metadata()
        try:
            await watch(served, "CALL-15")
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        finally:
            open_call.cancel()
        raise AssertionError("a second watch was served")

    code, details = run(redis_url, scenario, limits=ServerLimits(max_watches=1))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.startswith("at most 1 guidance watches are open in this worker")


def test_publishers_publish_and_desktops_watch(redis_url: str, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(token_line("pub", "publisher") + token_line("desk", "desktop"))

    async def scenario(served: InProcess) -> dict[str, grpc.StatusCode]:
        codes = {}

        async def code_of(name: str, call: Awaitable[object]) -> None:
            try:
                await call
                codes[name] = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                codes[name] = exc.code()

        def auth(token: str) -> tuple[tuple[str, str], ...]:
            return (("authorization", f"Bearer {token}"),)

        request = pb.PublishEventsRequest(events=[started("CALL-16")])
        g = served.guidance
        await code_of("publisher publishes", g.PublishEvents(request, metadata=auth("pub")))
        await code_of("desktop publishes", g.PublishEvents(request, metadata=auth("desk")))
        await code_of("nobody publishes", g.PublishEvents(request))
        watch_request = pb.WatchGuidanceRequest(interaction_id="CALL-16")

        async def first(token: str) -> None:
            async for _ in g.WatchGuidance(watch_request, metadata=auth(token), timeout=2):
                return

        await code_of("publisher watches", first("pub"))
        await code_of("desktop decides", served.stub.Ping(pb.PingRequest(), metadata=auth("desk")))
        await code_of("publisher decides", served.stub.Ping(pb.PingRequest(), metadata=auth("pub")))
        return codes

    authenticator = Authenticator(tokens=TokenFile(tokens))
    codes = run(redis_url, scenario, authenticator=authenticator)
    assert codes == {
        "publisher publishes": grpc.StatusCode.OK,
        "desktop publishes": grpc.StatusCode.OK,
        "nobody publishes": grpc.StatusCode.UNAUTHENTICATED,
        "publisher watches": grpc.StatusCode.PERMISSION_DENIED,
        "desktop decides": grpc.StatusCode.OK,
        "publisher decides": grpc.StatusCode.PERMISSION_DENIED,
    }


def test_a_restarted_loop_replays_what_it_had_not_acknowledged(redis_url: str) -> None:
    """The moment process died after reading work it never acknowledged: a fresh loop
    (a fresh detector) replays the live interaction and writes each item once."""

    async def scenario(served: InProcess) -> tuple[list[str], int, int]:
        async with running_moments(redis_url, served) as first:
            await publish(served, started("CALL-17"), said("CALL-17", "a", "one"))
            deadline = time.monotonic() + 20
            while (await _written(served, "CALL-17")) < 1:
                assert time.monotonic() < deadline, "the first loop wrote nothing"
                await asyncio.sleep(0.02)
            assert first.live == 1
        # Read by the "dead" process, never acknowledged; and more arrive meanwhile.
        connection = PipelinedConnection(redis_url)
        await publish(served, said("CALL-17", "b", "two"), said("CALL-17", "c", "cancel it"))
        taken = await read_work(connection, range(MOMENT_SHARDS), consumer_name(0), pending=False)
        assert len(taken) == 2
        await publish(served, ended("CALL-17"))
        async with running_moments(redis_url, served):
            guidance = [g.guidance_id for g in await watch(served, "CALL-17")]
        pending = sum([await pending_count(connection, s) for s in range(MOMENT_SHARDS)])
        await connection.aclose()
        return guidance, pending, len(taken)

    guidance, pending, _ = run(redis_url, scenario)
    assert guidance == [
        "CALL-17:heard:2", "CALL-17:heard:3", "CALL-17:retention:4", "CALL-17:survey",
    ]  # fmt: skip
    assert pending == 0


async def _written(served: InProcess, interaction: str) -> int:
    connection = PipelinedConnection(served.store.url)
    try:
        return int(await connection.call("HLEN", f"nba:interaction:{{{interaction}}}:guidance-ids"))
    finally:
        await connection.aclose()


def test_new_rules_reach_new_interactions_while_live_ones_keep_theirs(
    redis_url: str, tmp_path: Path
) -> None:
    changed = tmp_path / "rules"
    shutil.copytree(RULES, changed)
    manifest = changed / "ruleset.yaml"
    manifest.write_text(manifest.read_text().replace("label:", "label: changed", 1))
    new = load_compiled(changed)

    async def scenario(served: InProcess) -> tuple[str, str, str]:
        old_version = served.rules.current.version
        async with running_moments(redis_url, served) as moments:
            await publish(served, started("CALL-18"))
            deadline = time.monotonic() + 20
            while moments.live < 1:  # the loop has fed CALL-18's start
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            served.rules.swap(new, loaded_at=time.time())
            await publish(served, started("CALL-19"))
            await publish(served, said("CALL-18", "o", "old"), said("CALL-19", "n", "new"))
            await publish(served, ended("CALL-18"), ended("CALL-19"))
            old = (await watch(served, "CALL-18"))[0].title
            fresh = (await watch(served, "CALL-19"))[0].title
            return old_version, old, fresh

    old_version, old, fresh = run(redis_url, scenario)
    assert new.version != old_version
    assert (old, fresh) == (f"heard on {old_version}", f"heard on {new.version}")
