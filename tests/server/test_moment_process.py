"""Live guidance in a real `serve`: a gRPC worker, a supervised moment process (the test
detector, tests/server/detectors.py), a Redis of its own. The moment process is killed
with SIGKILL while events flow; the CLI replays a recording and watches."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.interactions import MOMENT_SHARDS
from decision_engine.store.keys import moment_work_key
from decision_engine.store.work_queue import GROUP
from tests.server.conftest import RULES, Server, child_named, load_demo, start_server
from tests.server.interaction_events import ended, said, started

ROOT = Path(__file__).resolve().parents[2]
DETECTOR = "tests.server.detectors:KeywordDetector"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def guided(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    tmp = tmp_path_factory.mktemp("moments")
    with EmbeddedRedis(data_dir=tmp / "redis") as store:
        load_demo(store.url)
        server = start_server(
            tmp, "--rules", str(RULES), "--redis-url", store.url, "--moment-detector", DETECTOR,
            workers=1, moment_workers=1, env={"PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            yield server, store.url
        finally:
            assert server.stop() == 0, server.log()


def moment_process(server: Server, *, not_pid: int = 0, timeout: float = 30) -> int:
    """The pid of the supervisor's child named moments-0 (other than `not_pid`)."""
    return child_named(server, "moments-0", not_pid=not_pid, timeout=timeout)


def publish(stub: pb_grpc.GuidanceServiceStub, *events: pb.InteractionEvent) -> None:
    stub.PublishEvents(pb.PublishEventsRequest(events=events), timeout=10)


def watch(stub: pb_grpc.GuidanceServiceStub, interaction: str) -> list[pb.Guidance]:
    request = pb.WatchGuidanceRequest(interaction_id=interaction)
    return list(stub.WatchGuidance(request, timeout=60))


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples named exactly `name` (any labels)."""
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.M)
    return sum(float(value) for value in pattern.findall(text))


def test_a_killed_moment_process_loses_nothing_and_repeats_nothing(
    guided: tuple[Server, str],
) -> None:
    server, url = guided
    first = moment_process(server)
    calls = [f"K-{n}" for n in range(12)]
    rounds = 8
    with server.channel() as channel:
        stub = pb_grpc.GuidanceServiceStub(channel)
        publish(stub, *(started(call) for call in calls))
        for round_ in range(rounds):
            text = "please cancel it" if round_ == 3 else f"line {round_}"
            publish(stub, *(said(call, f"{call}-u{round_}", text) for call in calls))
            if round_ == 3:
                os.kill(first, signal.SIGKILL)  # while work is queued and in flight
        second = moment_process(server, not_pid=first)
        publish(stub, *(ended(call) for call in calls))
        seen = {call: watch(stub, call) for call in calls}
    for call in calls:
        expected = [
            f"{call}:retention:{seq}" if seq == 5 else f"{call}:heard:{seq}"
            for seq in range(2, rounds + 2)
        ] + [f"{call}:survey"]
        got = seen[call]
        # Every event processed, no item missing, none twice, in order.
        assert [g.guidance_id for g in got] == expected, call
        assert [g.seq for g in got] == list(range(1, len(expected) + 1))
        retention = got[3]
        # Decided like Decide (C-1001 has called a dozen times now: a repeat caller).
        assert retention.decision.decision_id and retention.decision.profile_found
        assert retention.decision.routing.queue in ("retention_specialists", "escalations")
        assert retention.text == "Alice: please cancel it"  # the profile, after a replay too
    with redis.Redis.from_url(url, decode_responses=True) as client:
        deadline = time.monotonic() + 30
        while True:
            pending = sum(
                int(client.xpending(moment_work_key(s), GROUP)["pending"])
                for s in range(MOMENT_SHARDS)
            )
            if pending == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert pending == 0, "work left unacknowledged"
    assert f"moment process 0 (pid {first}) exited with -9; restarting" in server.log()
    assert second != first
    text = server.metrics()
    assert metric(text, "moment_process_restarts_total") == 1
    assert metric(text, "moment_replays_total") >= 1
    assert metric(text, "interaction_events_total") == len(calls) * (rounds + 2)
    assert 'interaction_events_total{kind="utterance"}' in text
    # Counted by the process that wrote each item: one killed between its write and its
    # count leaves that item uncounted (Redis has them all, as checked above).
    written = metric(text, "guidance_written_total")
    assert len(calls) * (rounds + 1) - len(calls) <= written <= len(calls) * (rounds + 1)
    assert 'guidance_written_total{moment_id="retention"}' in text
    assert metric(text, "guidance_latency_seconds_count") > 0
    assert metric(text, "live_interactions") == 0
    assert metric(text, "guidance_watches_open") == 0
    assert "K-" not in "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def test_the_cli_replays_a_recording_and_watches_it(
    guided: tuple[Server, str], tmp_path: Path
) -> None:
    server, _ = guided
    recording = tmp_path / "call.jsonl"
    base = 1_700_000_000
    lines = [
        {"event_id": "r1", "interaction_id": "REC-1", "occurred_at": base,
         "started": {"customer_id": "C-1001", "channel": "CHANNEL_VOICE", "intent": "billing"}},
        {"event_id": "r2", "interaction_id": "REC-1", "occurred_at": base + 0.2,
         "utterance": {"speaker": "SPEAKER_CUSTOMER", "text": "my bill is wrong"}},
        {"event_id": "r3", "interaction_id": "REC-1", "occurred_at": base + 0.4,
         "utterance": {"speaker": "SPEAKER_CUSTOMER", "text": "I will cancel"}},
        {"event_id": "r4", "interaction_id": "REC-1", "occurred_at": base + 0.6,
         "ended": {"resolved": False}},
    ]  # fmt: skip
    recording.write_text(
        "\n".join(
            json.dumps({**line, "occurred_at": _rfc3339(float(line["occurred_at"]))})  # type: ignore[arg-type]
            for line in lines
        )
        + "\n"
    )
    cli = [sys.executable, "-m", "decision_engine.cli", "interaction"]
    target = ["--target", server.target]
    outputs = []
    for mode in (["--fast"], []):  # at once, then with the recorded timing
        name = f"REC-{len(outputs)}"
        out = subprocess.run(
            [*cli, "replay", str(recording), *mode, "--as", name, *target],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        outputs.append((name, out.stdout))
    for name, stdout in outputs:
        guidance = [line for line in stdout.splitlines() if line.startswith("←")]
        assert len(guidance) == 3, stdout
        assert "[info] coaching: heard on" in guidance[0] and "my bill is wrong" in guidance[0]
        assert "[warning] offer: Customer wants to cancel — Alice: I will cancel" in guidance[1]
        assert "[info] survey: Offer the survey" in guidance[2]
        assert re.search(r"decision: (retention_specialists|escalations) p\d; offers: \S", stdout)
        assert "transfer: survey_ivr priority 5" in stdout
        assert f"3 guidance item(s); interaction {name} ended" in stdout
    # Watching an interaction that has ended prints what it had, and returns.
    watched = subprocess.run(
        [*cli, "watch", "REC-0", "--after", "1", *target],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert watched.returncode == 0, watched.stderr
    shown = [line for line in watched.stdout.splitlines() if line.startswith("←")]
    assert len(shown) == 2 and "#2 [warning] offer" in shown[0] and "#3 [info] survey" in shown[1]
    # A watch for a bad id is refused with the field named.
    bad = subprocess.run(
        [*cli, "watch", "no spaces", *target], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and "INVALID_ARGUMENT: interaction_id:" in bad.stderr


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(seconds))) + (
        f".{round((seconds % 1) * 1000):03d}Z"
    )


def test_health_and_reflection_name_the_guidance_service(guided: tuple[Server, str]) -> None:
    server, _ = guided
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(
            health_pb2.HealthCheckRequest(service="decision.v1.GuidanceService"), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as error:
            pb_grpc.GuidanceServiceStub(channel).PublishEvents(pb.PublishEventsRequest(), timeout=5)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_moment_detector_that_does_not_import_stops_serve_at_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="serve exited with 2") as error:
        start_server(
            tmp_path, "--rules", str(RULES), "--redis-url", "redis://127.0.0.1:1/0",
            "--moment-detector", "no_such_module:Detector", workers=1, moment_workers=1,
        )  # fmt: skip
    assert "moment detector 'no_such_module:Detector': cannot import no_such_module" in str(
        error.value
    )
