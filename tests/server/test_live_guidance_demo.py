"""Live guidance end to end with the real moment engine (durable_rules) and the demo
moments: a real `serve` with a supervised moment process, a Redis of its own.

The demo recordings replay to the timelines the README shows, and a moment process
killed with SIGKILL while events flow loses no guidance and repeats none."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.store.embedded import EmbeddedRedis
from tests.server.conftest import RULES, Server, load_demo, start_server
from tests.server.interaction_events import base, said, started
from tests.server.test_moment_process import metric, moment_process, publish, watch

ROOT = Path(__file__).resolve().parents[2]
RECORDINGS = ROOT / "demo" / "interactions"
pytestmark = pytest.mark.slow

TIMELINES = {
    "alice-wants-to-cancel.jsonl": [
        ("4:30.0", "hold-then-frustration"),
        ("5:00.0", "cancel-high-value-transfer"),
        ("8:00.0", "ended-unresolved"),
    ],
    "dan-pays-and-lost-card.jsonl": [
        ("0:00.0", "repeat-contact"),
        ("2:00.0", "payment-disclosure-missing"),
        ("2:30.0", "card-lost-or-stolen"),
    ],
}
"""(minutes:seconds into the call, moment) of each guidance item, as the README shows."""


@pytest.fixture(scope="module")
def guided_with_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    tmp = tmp_path_factory.mktemp("live-guidance")
    with EmbeddedRedis(data_dir=tmp / "redis") as store:
        load_demo(store.url)
        # The default detector: decision_engine.moments.engine:MomentEngine.
        server = start_server(
            tmp, "--rules", str(RULES), "--redis-url", store.url, workers=1, moment_workers=1
        )
        try:
            yield server, store.url
        finally:
            assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def guided(guided_with_store: tuple[Server, str]) -> Server:
    return guided_with_store[0]


def _timeline(stdout: str) -> list[tuple[str, str]]:
    """(clock, moment id) of each guidance line a replay printed."""
    found = re.findall(r"^←\s+(\d+:\d\d\.\d)\s+#\d+ .*\(([\w-]+)\)$", stdout, re.M)
    return [(clock, moment) for clock, moment in found]


@pytest.mark.parametrize("recording", sorted(TIMELINES))
def test_a_demo_recording_replays_to_its_documented_timeline(
    guided: Server, recording: str
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "decision_engine.cli", "interaction", "replay",
         str(RECORDINGS / recording), "--fast", "--target", guided.target],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr + guided.log()
    assert _timeline(out.stdout) == TIMELINES[recording], out.stdout
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for clock, moment in TIMELINES[recording]:
        assert re.search(rf"^←\s+{re.escape(clock)}\s+#\d+ .*\({moment}\)$", readme, re.M), (
            f"the README does not show {moment} at {clock}"
        )


def _sentiment(interaction: str, event_id: str, value: float) -> pb.InteractionEvent:
    event = base(interaction, event_id)
    event.sentiment.CopyFrom(pb.SentimentChanged(value=value, speaker=pb.SPEAKER_CUSTOMER))
    return event


def _ended_unresolved(interaction: str) -> pb.InteractionEvent:
    event = base(interaction, f"{interaction}-end")
    event.ended.resolved = False
    return event


def test_a_killed_moment_process_loses_nothing_and_repeats_nothing(guided: Server) -> None:
    """Customers the store does not know (no repeat contacts, no high value): each call
    mentions cancelling, then sounds upset three times, then ends unresolved."""
    first = moment_process(guided)
    calls = [f"KR-{n}" for n in range(24)]
    rounds = 8
    with guided.channel() as channel:
        stub = pb_grpc.GuidanceServiceStub(channel)
        publish(stub, *(started(call, customer=f"NEW-{call}") for call in calls))
        for r in range(rounds):
            text = "I want to cancel" if r == 2 else f"line {r}"
            publish(stub, *(said(call, f"{call}-u{r}", text) for call in calls))
            if r >= 5:
                publish(stub, *(_sentiment(call, f"{call}-s{r}", -0.7) for call in calls))
            if r == 3:
                os.kill(first, signal.SIGKILL)  # while work is queued and in flight
        second = moment_process(guided, not_pid=first)
        publish(stub, *(_ended_unresolved(call) for call in calls))
        seen = {call: watch(stub, call) for call in calls}
    expected = ["cancel-mentioned", "sentiment-falling", "ended-unresolved"]
    for call in calls:
        got = seen[call]
        assert [g.moment_id for g in got] == expected, (call, guided.log()[-3000:])
        assert [g.seq for g in got] == [1, 2, 3]
        assert len({g.guidance_id for g in got}) == 3
        cancel = got[0]
        assert cancel.event_ids == [f"{call}-u2"]
        # Re-decided like Decide, with the moment's context (intent: cancel).
        assert cancel.decision.decision_id and not cancel.decision.profile_found
    assert f"moment process 0 (pid {first}) exited with -9; restarting" in guided.log()
    assert second != first
    text = guided.metrics()
    assert metric(text, "moment_process_restarts_total") >= 1
    assert metric(text, "moment_replays_total") >= 1


def test_the_agents_use_of_guidance_is_an_outcome_counted_per_arm(
    guided_with_store: tuple[Server, str],
) -> None:
    server, url = guided_with_store
    call = "OUT-1"
    with server.channel() as channel:
        guidance = pb_grpc.GuidanceServiceStub(channel)
        decisions = pb_grpc.DecisionServiceStub(channel)
        publish(guidance, started(call, customer="C-1007"), said(call, f"{call}-u", "cancel it"))
        publish(guidance, _ended_unresolved(call))
        items = {g.moment_id: g for g in watch(guidance, call)}
        item = items["cancel-mentioned"]
        assert item.outcome_id
        used = pb.RecordOutcomeRequest(
            decision_id=item.outcome_id, offer_id="moment:cancel-mentioned",
            outcome=pb.OUTCOME_ACCEPTED,
        )  # fmt: skip
        assert not decisions.RecordOutcome(used, timeout=10).duplicate
        assert decisions.RecordOutcome(used, timeout=10).duplicate
        # The id stands for that item only: another moment's name is refused.
        other = pb.RecordOutcomeRequest(
            decision_id=item.outcome_id, offer_id="moment:ended-unresolved",
            outcome=pb.OUTCOME_DECLINED,
        )  # fmt: skip
        with pytest.raises(grpc.RpcError) as refused:
            decisions.RecordOutcome(other, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "offer_id" in (refused.value.details() or "")
    out = subprocess.run(
        [sys.executable, "-m", "decision_engine.cli", "report", "--redis-url", url, "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = [r for r in json.loads(out.stdout)["offers"] if r["offer"] == "moment:cancel-mentioned"]
    assert len(rows) == 1 and rows[0]["accepted"] == 1, out.stdout
