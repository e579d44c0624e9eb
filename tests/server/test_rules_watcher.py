"""The rules watcher (server/reload.py) on real files: what it hands the workers, and
what it refuses. The supervisor polls it; here the test polls it, so no test depends on
how fast the machine is. The last test runs it inside a real `serve`."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.moments.trial import CRASH_HOOK
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.server import metrics
from decision_engine.server.reload import RulesWatcher, fingerprint
from decision_engine.store.embedded import EmbeddedRedis
from tests.server.conftest import RULES, start_server

DEADLINE_S = 10.0


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    """A copy of the shipped rules (without their tests) to edit."""
    directory = tmp_path / "rules"
    shutil.copytree(RULES, directory, ignore=shutil.ignore_patterns("tests"))
    return directory


@pytest.fixture
def watcher(rules: Path) -> RulesWatcher:
    return RulesWatcher(rules, load_compiled(rules).version)


@pytest.fixture
def reports(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="decision_engine.reload"):
        yield caplog


def failures() -> float:
    metrics.init_metrics()
    value = REGISTRY.get_sample_value("ruleset_reload_failures_total")
    assert value is not None
    return value


def settle(watcher: RulesWatcher) -> list[CompiledRuleset]:
    """Poll as the supervisor does until the watcher has taken in the files as they are
    now; the rulesets it handed over meanwhile."""
    handed: list[CompiledRuleset] = []
    deadline = time.monotonic() + DEADLINE_S
    while True:
        ruleset = watcher.poll()
        if ruleset is not None:
            handed.append(ruleset)
        if watcher.pending is None and watcher.seen == fingerprint(watcher.directory):
            return handed
        assert time.monotonic() < deadline, "the watcher never settled on the files"


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_nothing_changed_hands_over_nothing(
    watcher: RulesWatcher, reports: pytest.LogCaptureFixture
) -> None:
    before = failures()
    for _ in range(3):
        assert settle(watcher) == []
    assert watcher.poll() is None and watcher.pending is None
    assert failures() == before
    assert reports.records == []


def title(ruleset: CompiledRuleset, offer_id: str) -> str:
    return next(o.title for o in ruleset.source.offers if o.id == offer_id)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_a_good_change_is_handed_over_once(
    rules: Path, watcher: RulesWatcher, reports: pytest.LogCaptureFixture
) -> None:
    old = watcher.version
    edit(rules / "offers.yaml", "title: Loyalty credit", "title: Loyalty credit plus")
    handed = settle(watcher)
    assert len(handed) == 1
    assert title(handed[0], "retention-loyalty-credit") == "Loyalty credit plus"
    assert handed[0].version != old
    assert handed[0].version == load_compiled(rules).version == watcher.version
    assert any(f"replacing {old}" in r.getMessage() for r in reports.records)
    assert settle(watcher) == [], "the same files are not handed over again"


def test_a_change_whose_moments_crash_their_trial_never_goes_live(
    rules: Path,
    watcher: RulesWatcher,
    reports: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trial child dies by SIGSEGV (its test hook) as durable_rules would: the change
    is refused with the moment named, and the last good ruleset stays."""
    old, before = watcher.version, failures()
    monkeypatch.setenv(CRASH_HOOK, "moment:cancel-mentioned")
    edit(rules / "moments.yaml", "title: The customer is thinking of leaving", "title: Leaving?")
    assert settle(watcher) == []
    assert watcher.version == old
    assert failures() == before + 1
    logged = "\n".join(errors(reports))
    assert "SIGSEGV" in logged and "cancel-mentioned" in logged, logged
    assert f"still serving ruleset {old}" in logged
    # Once the moments run, the same files go live.
    monkeypatch.delenv(CRASH_HOOK)
    edit(rules / "moments.yaml", "title: Leaving?", "title: Leaving now?")
    handed = settle(watcher)
    assert len(handed) == 1 and handed[0].version != old


def test_a_change_waits_one_poll_for_the_writer_to_finish(
    rules: Path, watcher: RulesWatcher
) -> None:
    edit(rules / "offers.yaml", "title: Loyalty credit", "title: Loyalty credit 2")
    assert watcher.poll() is None, "just changed: the writer may not be done"
    ruleset = watcher.poll()
    assert ruleset is not None
    assert title(ruleset, "retention-loyalty-credit") == "Loyalty credit 2"


def test_saves_in_quick_succession_are_one_reload_of_the_last(
    rules: Path, watcher: RulesWatcher, reports: pytest.LogCaptureFixture
) -> None:
    """Each poll sees a different file (an editor's saves, a checkout writing file after
    file, a half-written file): nothing is loaded until the files stop changing."""
    offers = rules / "offers.yaml"
    original = offers.read_text()
    before = failures()
    saves = [
        original[: len(original) // 2],  # half written: would not even parse
        original.replace("title: Loyalty credit", "title: Loyalty credit A"),
        original.replace("title: Loyalty credit", "title: Loyalty credit Bee"),
        original.replace("title: Loyalty credit", "title: Loyalty credit Final"),
    ]
    for text in saves:
        offers.write_text(text)
        assert watcher.poll() is None
    handed = [watcher.poll(), watcher.poll(), watcher.poll()]
    assert handed[1:] == [None, None]
    assert handed[0] is not None
    assert title(handed[0], "retention-loyalty-credit") == "Loyalty credit Final"
    assert failures() == before, "the half-written file was never loaded"
    assert errors(reports) == []


def test_a_bad_change_keeps_the_last_good_ruleset_and_says_where_and_why(
    rules: Path, watcher: RulesWatcher, reports: pytest.LogCaptureFixture
) -> None:
    old = watcher.version
    routing = rules / "routing.yaml"
    line = line_of(routing, "clv >= 10000")
    before = failures()
    edit(routing, "clv >= 10000", 'clv >= "lots"')
    assert settle(watcher) == []
    assert watcher.version == old
    assert failures() == before + 1
    reported = errors(reports)
    assert any(
        m.startswith(f"{routing}:{line}:") and "cannot compare a number with a string" in m
        for m in reported
    ), reported
    assert reported[-1] == f"rule change rejected; still serving ruleset {old}"

    # Reported once, not on every poll while the file stays bad.
    reports.clear()
    assert settle(watcher) == []
    assert failures() == before + 1 and errors(reports) == []

    edit(routing, 'clv >= "lots"', "clv >= 12000")
    handed = settle(watcher)
    assert len(handed) == 1 and handed[0].version not in (old, "")
    assert watcher.version == handed[0].version


def test_a_bad_change_reverted_hands_over_nothing(
    rules: Path, watcher: RulesWatcher, reports: pytest.LogCaptureFixture
) -> None:
    """Back to what is being served: nothing to swap, and nothing wrong to report."""
    old = watcher.version
    routing = rules / "routing.yaml"
    original = routing.read_text()
    routing.write_text(original.replace("priority: 1", "priority: one"))
    assert settle(watcher) == []
    before = failures()
    reports.clear()
    routing.write_text(original)
    assert settle(watcher) == []
    assert watcher.version == old
    assert failures() == before and errors(reports) == []


def test_a_yaml_syntax_error_is_reported_at_its_line(
    rules: Path, watcher: RulesWatcher, reports: pytest.LogCaptureFixture
) -> None:
    offers = rules / "offers.yaml"
    line = line_of(offers, "channels: [voice, chat]")
    edit(offers, "channels: [voice, chat]", "channels: [voice, chat")
    assert settle(watcher) == []
    assert any(m.startswith(f"{offers}:") and "YAML syntax" in m for m in errors(reports)), errors(
        reports
    )
    lines = [int(m.split(":")[1]) for m in errors(reports) if m.startswith(f"{offers}:")]
    assert lines and all(n >= line for n in lines)


def test_a_file_that_is_not_utf8_is_a_rejected_change_not_a_crash(
    rules: Path, watcher: RulesWatcher, reports: pytest.LogCaptureFixture
) -> None:
    """Regression: a rule file saved as Latin-1 raised UnicodeDecodeError out of poll(),
    which took the supervisor (and with it every worker) down."""
    old = watcher.version
    offers = rules / "offers.yaml"
    line = line_of(offers, "title: Plan review")
    before = failures()
    edit(offers, "title: Plan review", "title: Plan révision")
    offers.write_bytes(offers.read_text().encode("latin-1"))
    assert settle(watcher) == []
    assert watcher.version == old
    assert failures() == before + 1
    assert f"{offers}:{line}:1: error: not UTF-8 text; save the file as UTF-8" in errors(reports)

    offers.write_bytes(offers.read_bytes().decode("latin-1").encode("utf-8"))
    handed = settle(watcher)
    assert len(handed) == 1
    assert title(handed[0], "retention-plan-review") == "Plan révision"


def test_a_deleted_file_is_a_change(rules: Path, watcher: RulesWatcher) -> None:
    """Without arbitration.yaml the rules still check (defaults): that is the new ruleset."""
    old = load_compiled(rules)
    assert old.source.policies
    (rules / "arbitration.yaml").unlink()
    handed = settle(watcher)
    assert len(handed) == 1
    assert handed[0].source.policies == ()
    assert len(handed[0].offers) == len(old.offers)


def test_deleting_a_file_the_others_need_is_refused_and_restoring_it_is_no_change(
    rules: Path, watcher: RulesWatcher, reports: pytest.LogCaptureFixture
) -> None:
    old = watcher.version
    schema = rules / "ruleset.yaml"
    kept = schema.read_bytes()
    schema.unlink()
    assert settle(watcher) == []
    assert watcher.version == old
    assert any("unknown field 'clv'" in m for m in errors(reports))
    schema.write_bytes(kept)
    assert settle(watcher) == []
    assert watcher.version == old


def test_a_renamed_file_is_a_new_version_with_the_same_rules(
    rules: Path, watcher: RulesWatcher
) -> None:
    old = load_compiled(rules)
    (rules / "offers.yaml").rename(rules / "10-offers.yml")
    handed = settle(watcher)
    assert len(handed) == 1
    assert handed[0].version != old.version, "the version hashes file names too"
    assert [o.id for o in handed[0].source.offers] == [o.id for o in old.source.offers]


def test_a_file_renamed_out_of_the_rules_is_as_if_deleted(
    rules: Path, watcher: RulesWatcher, reports: pytest.LogCaptureFixture
) -> None:
    old = watcher.version
    (rules / "routing.yaml").rename(rules / "routing.yaml.bak")
    assert settle(watcher) == []
    assert watcher.version == old
    assert any("no default route" in m for m in errors(reports)), errors(reports)
    (rules / "routing.yaml.bak").rename(rules / "routing.yaml")
    assert settle(watcher) == []
    assert watcher.version == old


def test_the_rules_directory_gone_keeps_serving_and_coming_back_is_picked_up(
    rules: Path, watcher: RulesWatcher, reports: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    old = watcher.version
    aside = tmp_path / "aside"
    rules.rename(aside)
    assert settle(watcher) == []
    assert watcher.version == old
    assert f"{rules}: error: rules directory not found" in errors(reports)
    # Back as it was: what is served already.
    aside.rename(rules)
    assert settle(watcher) == []
    assert watcher.version == old
    # And then changed.
    edit(rules / "offers.yaml", "title: Loyalty credit", "title: Loyalty credit back")
    handed = settle(watcher)
    assert [title(r, "retention-loyalty-credit") for r in handed] == ["Loyalty credit back"]


def test_files_that_are_not_rules_are_not_watched(
    rules: Path, watcher: RulesWatcher, reports: pytest.LogCaptureFixture
) -> None:
    """Editor swap and lock files, notes, the rule tests, a subdirectory: none is a rule file."""
    seen = watcher.seen
    before = failures()
    (rules / ".offers.yaml.swp").write_bytes(b"\xff\x00 garbage")
    (rules / ".#routing.yaml").write_text("not: [yaml")
    (rules / "NOTES.md").write_text("offers: nonsense")
    (rules / "tests").mkdir()
    (rules / "tests" / "situations.yaml").write_text("cases: [broken")
    (rules / "old.yaml.d").mkdir()
    assert fingerprint(rules) == seen
    assert settle(watcher) == []
    assert failures() == before
    assert reports.records == []


def test_a_touch_without_a_change_hands_over_nothing_and_is_taken_in(
    rules: Path, watcher: RulesWatcher, reports: pytest.LogCaptureFixture
) -> None:
    old = watcher.version
    offers = rules / "offers.yaml"
    stat = offers.stat()
    os.utime(offers, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fingerprint(rules) != watcher.seen
    before = failures()
    assert settle(watcher) == []
    assert watcher.version == old
    assert failures() == before and errors(reports) == []
    assert watcher.seen == fingerprint(rules), "the touched files are taken in, not reloaded again"


def test_a_new_rule_file_is_a_change(rules: Path, watcher: RulesWatcher) -> None:
    (rules / "zz-extra.yaml").write_text(
        "offers:\n"
        "  - id: extra-offer\n"
        "    title: Extra\n"
        "    category: service\n"
        "    value: 10\n"
        "    propensity: 0.1\n"
        "    script: An extra offer.\n"
    )
    handed = settle(watcher)
    assert len(handed) == 1
    assert "extra-offer" in {o.id for o in handed[0].source.offers}


# --- inside a real server ----------------------------------------------------------------


def served_version(target: str) -> str:
    with grpc.insecure_channel(target) as channel:
        status = pb_grpc.AdminServiceStub(channel).GetRuleset(pb.GetRulesetRequest(), timeout=5)
    return status.version


def test_a_server_survives_a_rule_file_that_is_not_utf8(
    tmp_path: Path, rules: Path, redis_server: EmbeddedRedis
) -> None:
    """Regression: the supervisor died on the UnicodeDecodeError, and every worker with it."""
    old = load_compiled(rules).version
    server = start_server(
        tmp_path, "--rules", str(rules), "--redis-url", redis_server.url, workers=1
    )
    try:
        assert served_version(server.target) == old
        offers = rules / "offers.yaml"
        offers.write_bytes(
            offers.read_bytes().replace(b"Plan review", "Plan révision".encode("latin-1"))
        )
        deadline = time.monotonic() + DEADLINE_S * 2
        while "not UTF-8 text" not in server.log():
            assert server.process.poll() is None, server.log()
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        assert server.process.poll() is None, server.log()
        with grpc.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert served_version(server.target) == old

        offers.write_bytes(offers.read_bytes().decode("latin-1").encode("utf-8"))
        new = load_compiled(rules).version
        deadline = time.monotonic() + DEADLINE_S * 2
        while served_version(server.target) != new:
            assert server.process.poll() is None, server.log()
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
    finally:
        assert server.stop() == 0, server.log()
