"""decision_engine.moments' public names, and what importing its plain values costs."""

from __future__ import annotations

import subprocess
import sys

import decision_engine.moments as moments
from decision_engine.moments.engine import MomentEngine
from decision_engine.moments.model import Detection, InteractionEvent


def test_the_public_names_are_the_engine_and_its_values() -> None:
    assert (moments.MomentEngine, moments.Detection, moments.InteractionEvent) == (
        MomentEngine,
        Detection,
        InteractionEvent,
    )


def test_the_plain_values_do_not_load_durable_rules() -> None:
    code = (
        "import sys, decision_engine.moments.model, decision_engine.ruleset.load; "
        "print('durable_rules_engine' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
