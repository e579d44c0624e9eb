"""Live guidance: moments detected in one interaction's event stream (on durable_rules).

    engine = MomentEngine(ruleset)              # one thread owns it
    engine.feed(event, profile) -> [Detection]  # profile: with the `started` event
    engine.advance(now) -> [Detection]          # deadlines due by event time `now`

and `decision_engine.moments.trial.trial(directory)` runs a directory's moments in a
throwaway process first (a durable_rules crash cannot be caught).

Names load on first use: `import decision_engine.moments.model` (the plain values) does
not load durable_rules' C extension.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "MomentEngine": "decision_engine.moments.engine",
    "Detection": "decision_engine.moments.model",
    "InteractionEvent": "decision_engine.moments.model",
}

__all__ = ["Detection", "InteractionEvent", "MomentEngine"]

if TYPE_CHECKING:
    from decision_engine.moments.engine import MomentEngine
    from decision_engine.moments.model import Detection, InteractionEvent


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
