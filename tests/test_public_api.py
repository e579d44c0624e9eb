"""The package's public surface: what `__all__` promises can be imported and used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import decision_engine
from decision_engine.decide import decide

RULES = Path(__file__).resolve().parents[1] / "rules"


def test_every_public_name_resolves() -> None:
    missing = [name for name in decision_engine.__all__ if not hasattr(decision_engine, name)]
    assert missing == []


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        _ = decision_engine.no_such_thing  # type: ignore[attr-defined]
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("an unknown name resolved")


def test_a_decision_from_the_public_names_only() -> None:
    ruleset = decision_engine.load_compiled(RULES)
    decision = decide(
        ruleset,
        state=None,
        context=decision_engine.Context(channel="voice", intent="cancel"),
        now=1_780_000_000.0,
        decision_id="d-1",
    )
    assert isinstance(decision, decision_engine.Decision)
    assert decision.routing.queue
    assert decision.ruleset_version == ruleset.version


def test_importing_the_package_pulls_in_neither_grpc_nor_protobuf() -> None:
    code = (
        "import sys, decision_engine; "
        "from decision_engine.decide import decide; "
        "print(sorted(m for m in sys.modules if m.startswith(('grpc', 'google.protobuf'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
