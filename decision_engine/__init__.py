"""Real-time next-best-action decisioning for contact centers.

The public surface is what `__all__` lists: load and compile a rules directory, the
values a decision takes and returns, and the error tree; the decision itself (pure, no
I/O) is `decision_engine.decide.decide`, since the subpackage holds that name here.
Everything else is internal and may change between releases. Names load on first use,
so `import decision_engine` stays cheap and the pure core never pulls in gRPC.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# First: whether the core's modules load compiled or from source is decided before any is.
from decision_engine import _core  # noqa: F401

__version__ = "0.1.0"

_EXPORTS = {
    "load_compiled": "decision_engine.ruleset.compiled",
    "CompiledRuleset": "decision_engine.ruleset.compiled",
    "Context": "decision_engine.decide.values",
    "CustomerState": "decision_engine.decide.values",
    "Contact": "decision_engine.decide.values",
    "OfferEvent": "decision_engine.decide.values",
    "Decision": "decision_engine.decide.values",
    "RankedOffer": "decision_engine.decide.values",
    "Routing": "decision_engine.decide.values",
    "Explanation": "decision_engine.decide.values",
    "DecisionEngineError": "decision_engine.errors",
    "RulesetError": "decision_engine.errors",
    "InvalidRequestError": "decision_engine.errors",
    "StoreError": "decision_engine.errors",
    "StoreUnavailableError": "decision_engine.errors",
    "ConfigError": "decision_engine.errors",
    "Problem": "decision_engine.errors",
    "Where": "decision_engine.errors",
}

__all__ = [
    "CompiledRuleset",
    "ConfigError",
    "Contact",
    "Context",
    "CustomerState",
    "Decision",
    "DecisionEngineError",
    "Explanation",
    "InvalidRequestError",
    "OfferEvent",
    "Problem",
    "RankedOffer",
    "Routing",
    "RulesetError",
    "StoreError",
    "StoreUnavailableError",
    "Where",
    "__version__",
    "load_compiled",
]

if TYPE_CHECKING:
    from decision_engine.decide.values import (
        Contact,
        Context,
        CustomerState,
        Decision,
        Explanation,
        OfferEvent,
        RankedOffer,
        Routing,
    )
    from decision_engine.errors import (
        ConfigError,
        DecisionEngineError,
        InvalidRequestError,
        Problem,
        RulesetError,
        StoreError,
        StoreUnavailableError,
        Where,
    )
    from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'decision_engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
