"""Rules directories with moments under test, and interactions to feed them."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from decision_engine.moments.engine import MomentEngine
from decision_engine.moments.model import Detection, EventValue, InteractionEvent
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled

DEMO = Path(__file__).resolve().parents[2] / "rules"
T0 = 1_741_000_000.0
"""Event time of every test interaction's start."""


def rules_dir(tmp_path: Path, moments: str) -> Path:
    """The demo's schema, offers and routing, with `moments` as its moments file."""
    target = tmp_path / "rules"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("ruleset.yaml", "routing.yaml", "offers.yaml", "arbitration.yaml"):
        shutil.copy(DEMO / name, target / name)
    (target / "moments.yaml").write_text(textwrap.dedent(moments).lstrip("\n"), encoding="utf-8")
    return target


def compiled(tmp_path: Path, moments: str) -> CompiledRuleset:
    return load_compiled(rules_dir(tmp_path, moments))


def engine(tmp_path: Path, moments: str, **options: Any) -> MomentEngine:
    return MomentEngine(compiled(tmp_path, moments), **options)


class Call:
    """One interaction: events at offsets from T0, with ids and seqs made up in order."""

    def __init__(self, engine: MomentEngine, interaction_id: str = "i-1") -> None:
        self.engine = engine
        self.id = interaction_id
        self.seq = 0
        self.detections: list[Detection] = []

    def event(self, at: float, kind: str, **data: EventValue) -> InteractionEvent:
        self.seq += 1
        return InteractionEvent(f"{self.id}-{self.seq}", self.id, T0 + at, self.seq, kind, data)

    def start(self, profile: Mapping[str, Any] | None = None, **data: EventValue) -> list[str]:
        return self.send(self.event(0, "started", **({"channel": "voice"} | data)), profile)

    def at(self, at: float, kind: str, **data: EventValue) -> list[str]:
        return self.send(self.event(at, kind, **data))

    def send(self, event: InteractionEvent, profile: Mapping[str, Any] | None = None) -> list[str]:
        """Feed one event; the moment ids it detected."""
        found = self.engine.feed(event, profile)
        self.detections += found
        return [d.moment_id for d in found]

    def says(self, at: float, text: str, speaker: str = "customer") -> list[str]:
        return self.at(at, "utterance", speaker=speaker, text=text)


def detected(detections: list[Detection]) -> list[tuple[str, float]]:
    """(moment id, seconds after T0) of each detection, in order."""
    return [(d.moment_id, round(d.at - T0, 6)) for d in detections]
