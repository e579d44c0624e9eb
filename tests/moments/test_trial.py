"""The trial runs the moments in a throwaway process: whatever happens there, the caller
gets a RulesetError, never a crash of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from decision_engine.errors import RulesetError
from decision_engine.moments.trial import CRASH_HOOK, trial
from tests.moments.support import DEMO, rules_dir
from tests.moments.test_limits import utterance_moments


def test_the_demo_passes() -> None:
    trial(DEMO)


def test_rules_that_do_not_load_come_back_with_their_places(tmp_path: Path) -> None:
    moments = """
    moments:
      - id: x
        pattern: {event: utterence}
        guidance: {kind: coaching, title: t, text: x}
    """
    directory = rules_dir(tmp_path, moments)
    with pytest.raises(RulesetError) as caught:
        trial(directory)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (str(directory / "moments.yaml"), 3)
    assert "unknown event 'utterence'" in problem.message


def test_moments_beyond_durable_rules_limits_are_refused(tmp_path: Path) -> None:
    directory = rules_dir(tmp_path, utterance_moments(20))
    with pytest.raises(RulesetError, match="error 303"):
        trial(directory)


def test_a_child_killed_by_a_signal_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_HOOK, "segfault")  # the documented test hook
    with pytest.raises(RulesetError) as caught:
        trial(DEMO)
    (problem,) = caught.value.problems
    assert "crashed (SIGSEGV)" in problem.message
    assert problem.file == str(DEMO)


def test_a_crash_is_blamed_on_the_moment_being_exercised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_HOOK, "moment:sentiment-falling")
    with pytest.raises(RulesetError) as caught:
        trial(DEMO)
    (problem,) = caught.value.problems
    assert "while exercising moment sentiment-falling" in problem.message
    text = (DEMO / "moments.yaml").read_text(encoding="utf-8").splitlines()
    assert (problem.file, text[problem.line - 1].strip()) == (
        str(DEMO / "moments.yaml"),
        "- id: sentiment-falling",
    )


def test_a_child_that_takes_too_long_is_stopped() -> None:
    with pytest.raises(RulesetError, match="did not finish within"):
        trial(DEMO, timeout=0.001)
