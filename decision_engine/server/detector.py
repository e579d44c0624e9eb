"""What a moment process needs from a moment detector, and how it gets one.

The moment process (moment_loop.py) depends on this Protocol only: the moment engine
(decision_engine.moments.engine.MomentEngine) fits it, and so does any small detector a
test defines. `serve --moment-detector module:name` names the factory (the engine by
default): a callable taking the compiled ruleset, such as the class itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from decision_engine.config import DEFAULT_MOMENT_DETECTOR
from decision_engine.errors import ConfigError
from decision_engine.moments.model import Detection, InteractionEvent
from decision_engine.ruleset.compiled import CompiledRuleset

DEFAULT_DETECTOR = DEFAULT_MOMENT_DETECTOR


class MomentDetector(Protocol):
    """Moments in the events of many interactions, in event time; one thread, one owner."""

    def feed(
        self, event: InteractionEvent, profile: Mapping[str, Any] | None = None
    ) -> list[Detection]:
        """The moments this event completes. `profile`: the customer's facts, given with
        the `started` event."""
        ...

    def advance(self, now: float) -> list[Detection]:
        """The moments whose deadlines are due by event time `now`."""
        ...

    def next_deadline(self) -> float | None:
        """The event time of the earliest deadline, if any."""
        ...

    def end(self, interaction_id: str) -> None:
        """Forget the interaction (its deadlines too)."""
        ...

    @property
    def live(self) -> int:
        """Interactions it holds."""
        ...

    def close(self) -> None: ...


DetectorFactory = Callable[[CompiledRuleset], MomentDetector]


def load_factory(spec: str) -> DetectorFactory:
    """`module:attribute` → the factory; ConfigError when it cannot be imported."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"moment detector {spec!r}: expected 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"moment detector {spec!r}: cannot import {module_name}: {exc}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"moment detector {spec!r}: {module_name} has no callable {attribute}")
    return factory  # type: ignore[no-any-return]
