"""The live context checked against the schema of the ruleset deciding it.

Decide's request checks (server/convert.py) know nothing of the ruleset; these do: the
intent must be one the schema lists (when it lists any), and every declared attribute's
value must fit its declaration (type, enum values, min/max). An attribute the schema
does not declare is ignored (the caller counts it) or, with `unknown_attributes: reject`,
refused. An empty value is an absent one, as in the facts.
"""

from __future__ import annotations

from decision_engine.decide.values import Context
from decision_engine.errors import InvalidRequestError
from decision_engine.ruleset.compiled import CompiledRuleset


def check_context(ruleset: CompiledRuleset, context: Context) -> int:
    """How many attributes were ignored as undeclared; InvalidRequestError names the
    first field (`context.intent`, `context.attributes[key]`) that does not fit."""
    fields = ruleset.source.fields
    intent = fields.get("intent")
    intents = intent.values if intent is not None and intent.kind == "enum" else ()
    if context.intent and intents and context.intent not in intents:
        raise InvalidRequestError(
            "context.intent", f"{context.intent!r} is not one of {', '.join(intents)}"
        )
    ignored = 0
    for key, value in context.attributes.items():
        spec = fields.get(key)
        if spec is None or spec.source != "attribute":
            if ruleset.source.unknown_attributes == "reject":
                declared = sorted(n for n, s in fields.items() if s.source == "attribute")
                raise InvalidRequestError(
                    f"context.attributes[{key}]",
                    f"is not declared in the schema (declared: {', '.join(declared) or 'none'})",
                )
            ignored += 1
            continue
        if not value:
            continue
        try:
            spec.parse(value)
        except ValueError as exc:
            reason = str(exc).removeprefix(f"{key}: ")
            raise InvalidRequestError(f"context.attributes[{key}]", reason) from None
    return ignored
