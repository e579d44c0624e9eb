"""The rulesets being served (champion, challenger), swapped whole on reload."""

from __future__ import annotations

from decision_engine.decide.experiment import CHAMPION
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.server import metrics


class ActiveRuleset:
    """The ruleset being served; a request pins `current` once, so a swap never splits it."""

    def __init__(self, ruleset: CompiledRuleset, *, loaded_at: float, arm: str = CHAMPION) -> None:
        self.current = ruleset
        self.loaded_at = loaded_at
        self.arm = arm
        self._publish()

    def swap(self, ruleset: CompiledRuleset, *, loaded_at: float) -> None:
        old = self.current
        self.current, self.loaded_at = ruleset, loaded_at
        metrics.RULESET_INFO.labels(old.version, old.source.label).set(0)
        self._publish()

    def _publish(self) -> None:
        rs = self.current
        metrics.RULESET_INFO.labels(rs.version, rs.source.label).set(1)
        metrics.RULES_LOADED.labels(self.arm, "offer").set(len(rs.offers))
        metrics.RULES_LOADED.labels(self.arm, "routing").set(len(rs.routes))
        metrics.RULES_LOADED.labels(self.arm, "policy").set(len(rs.policies))
