"""Typed values of case files: the getters every kind of rule test case is read with.

Readers take the node of an optional key (None when the key is absent) and return None
both when it is absent and when it is wrong; a wrong value is also a located problem.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import yaml
import yaml.constructor

from decision_engine.errors import Problem
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.typecheck import did_you_mean
from decision_engine.ruleset.yaml_nodes import NodeReader
from decision_engine.store.importer import ID_FIELD, canonical_profile


class CaseNodes(NodeReader):
    """Reads the scalars and shapes of one case file."""

    def __init__(self, file: str, problems: list[Problem] | None = None) -> None:
        super().__init__(file, [] if problems is None else problems)
        self.constructor = yaml.constructor.SafeConstructor()

    def required(self, spec: dict[str, yaml.Node], key: str, node: yaml.Node, what: str) -> None:
        if key not in spec:
            self.error(node, f"{what} has no `{key}`")

    # -- shapes and scalars ----------------------------------------------------------

    def mapping(
        self, node: yaml.Node | None, what: str, allowed: tuple[str, ...] | None = None
    ) -> dict[str, yaml.Node] | None:
        if node is None:
            return None
        return self.entries(node, what, allowed, list_known=True)

    def value(self, node: yaml.Node) -> Any:
        """A scalar as YAML types it (number, bool, date, text or None); None otherwise."""
        if not isinstance(node, yaml.ScalarNode):
            return None
        return self.constructor.construct_object(node)

    def text(self, node: yaml.Node | None, what: str) -> str | None:
        if node is None:
            return None
        if not isinstance(node, yaml.ScalarNode) or self.value(node) is None:
            self.error(node, f"{what} must be a single value")
            return None
        # The text as written: `queue: 007` stays "007", not 7.
        return str(node.value)

    def number(self, node: yaml.Node | None, what: str, low: float, high: float) -> float | None:
        if node is None:
            return None
        value = self.value(node)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            self.error(node, f"{what} must be a number")
            return None
        if not low <= value <= high:
            self.error(node, f"{what} must be between {low:g} and {high:g}, got {value:g}")
            return None
        return float(value)

    def integer(self, node: yaml.Node | None, what: str, low: int, high: int) -> int | None:
        value = self.number(node, what, low, high)
        if node is not None and value is not None and not value.is_integer():
            self.error(node, f"{what} must be a whole number")
            return None
        return None if value is None else int(value)

    def boolean(self, node: yaml.Node | None, what: str) -> bool | None:
        if node is None:
            return None
        value = self.value(node)
        if not isinstance(value, bool):
            self.error(node, f"{what} must be true or false")
            return None
        return value

    def moment(self, node: yaml.Node | None, what: str) -> float | None:
        """An ISO datetime or date, UTC unless it says otherwise, as epoch seconds."""
        raw = self.text(node, what)
        if node is None or raw is None:
            return None
        try:
            moment = datetime.fromisoformat(raw.strip())
        except ValueError:
            self.error(node, f"{what}: {raw!r} is not an ISO date or datetime (UTC)")
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()

    def choice(self, node: yaml.Node | None, what: str, known: Collection[str]) -> str | None:
        """A name that must be one of `known` (any name when `known` is empty)."""
        name = self.text(node, what)
        if node is not None and name is not None and known and name not in known:
            hint = did_you_mean(name, list(known)) or f" (known: {', '.join(known)})"
            self.error(node, f"{what}: unknown {name!r}{hint}")
            return None
        return name

    def choices(
        self, node: yaml.Node | None, what: str, known: Collection[str]
    ) -> tuple[str, ...] | None:
        """One name or a list of names; None when the key is absent."""
        if node is None:
            return None
        items = [node] if isinstance(node, yaml.ScalarNode) else self.sequence(node, what)
        return tuple(n for item in items if (n := self.choice(item, what, known)) is not None)

    def typed(self, node: yaml.Node, where: str, spec: FieldSpec) -> str | None:
        """A schema-declared value in the canonical text the store would hold."""
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, f"{where}: {spec.name} must be a single value")
            return None
        try:
            # The importer's own canonicalisation: a case sees exactly what an import stores.
            record = {ID_FIELD: "case", spec.name: self.value(node)}
            _, fields = canonical_profile(record, {spec.name: spec})
        except ValueError as exc:
            # The schema's message names the field already.
            self.error(node, f"{where}: {exc}")
            return None
        return fields.get(spec.name)
