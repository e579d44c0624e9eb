"""Typed values of rule files: the getters the section builders read a ruleset with.

A wrong value is a located problem and the getter returns a default, so one run
reports every problem in the rules.
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from decision_engine.errors import Problem
from decision_engine.ruleset.durations import DurationError, format_duration, parse_duration
from decision_engine.ruleset.expr import ExprError, Node, parse
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.spec import DEFAULT_PRECEDENCE, MAX_PRECEDENCE, Condition
from decision_engine.ruleset.template import (
    Template,
    TemplateError,
    check_template,
    parse_template,
)
from decision_engine.ruleset.typecheck import OutcomeNames, check
from decision_engine.ruleset.yaml_nodes import NodeReader


class RuleNodes(NodeReader):
    """Reads the nodes of one rule file."""

    outcomes: OutcomeNames | None = None
    """What days_since_outcome() may name in the conditions read now; None where
    conditions cannot read the offer history (the section builder sets it)."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        super().__init__(file, problems)
        self._parsed: dict[tuple[str, str, int, int], tuple[object, object, Node]] = {}

    # -- typed scalars ----------------------------------------------------------------

    def mapping(
        self, node: yaml.Node | None, what: str, allowed: tuple[str, ...] | None = None
    ) -> dict[str, yaml.Node]:
        """A mapping's values by key; {} when absent, and {} with a problem when wrong."""
        if node is None:
            return {}
        return self.entries(node, what, allowed) or {}

    def scalar(self, node: yaml.Node, what: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, f"{what} must be a single value")
            return None
        return str(node.value)

    def text(self, node: yaml.Node | None, what: str, default: str | None = None) -> str:
        if node is None:
            if default is None:
                return ""
            return default
        value = self.scalar(node, what)
        if value is not None and value.strip() == "" and default is None:
            self.error(node, f"{what} must not be empty")
        return value or ""

    def number(
        self,
        node: yaml.Node | None,
        what: str,
        default: float,
        low: float | None = None,
        high: float | None = None,
    ) -> float:
        if node is None:
            return default
        raw = self.scalar(node, what)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.error(node, f"{what} must be a number, got {raw!r}")
            return default
        if low is not None and high is not None and not low <= value <= high:
            self.error(node, f"{what} must be between {low:g} and {high:g}, got {raw}")
        elif low is not None and value < low:
            self.error(node, f"{what} must be at least {low:g}, got {raw}")
        elif high is not None and value > high:
            self.error(node, f"{what} must be at most {high:g}, got {raw}")
        return value

    def integer(self, node: yaml.Node | None, what: str, default: int, low: int, high: int) -> int:
        value = self.number(node, what, default, low, high)
        if node is not None and not float(value).is_integer():
            self.error(node, f"{what} must be a whole number")
        return int(value)

    def precedence(self, node: yaml.Node | None) -> int:
        """`precedence:` of a routing rule or an arbitration policy: among those that
        hold, the lowest wins; DEFAULT_PRECEDENCE when absent."""
        return self.integer(node, "precedence", DEFAULT_PRECEDENCE, 0, MAX_PRECEDENCE)

    def boolean(self, node: yaml.Node | None, what: str) -> bool:
        if node is None:
            return False
        raw = self.scalar(node, what)
        if raw in ("true", "false"):
            return raw == "true"
        self.error(node, f"{what} must be true or false")
        return False

    def duration(self, node: yaml.Node | None, what: str, low: float, high: float) -> float | None:
        """Seconds of a `45s` / `3m` / `2h` duration; None when absent or wrong."""
        if node is None:
            return None
        raw = self.scalar(node, what)
        if raw is None:
            return None
        try:
            seconds = parse_duration(raw)
        except DurationError as exc:
            self.error(node, f"{what}: {exc}")
            return None
        if not low <= seconds <= high:
            self.error(
                node,
                f"{what} must be between {format_duration(low)} and {format_duration(high)}, "
                f"got {raw}",
            )
            return None
        return seconds

    def names(self, node: yaml.Node | None, what: str) -> tuple[str, ...]:
        if node is None:
            return ()
        if isinstance(node, yaml.ScalarNode):
            return (str(node.value),)
        return tuple(
            v for item in self.sequence(node, what) if (v := self.scalar(item, what)) is not None
        )

    # -- conditions and templates -----------------------------------------------------

    def conditions(
        self, node: yaml.Node | None, what: str, fields: dict[str, FieldSpec]
    ) -> tuple[Condition, ...]:
        """`when:` as one condition or a list of conditions that must all hold."""
        if node is None:
            return ()
        items = [node] if isinstance(node, yaml.ScalarNode) else self.sequence(node, what)
        out = []
        for item in items:
            cond = self.expression(item, what, fields, want="bool")
            if cond is not None:
                out.append(cond)
        return tuple(out)

    def expression(
        self, node: yaml.Node, what: str, fields: dict[str, FieldSpec], *, want: str
    ) -> Condition | None:
        raw = self.scalar(node, what)
        if raw is None:
            return None
        where = self.where(node)
        # A ruleset repeats its expressions (10,000 generated offers: 38,000 expressions,
        # 331 distinct texts); nodes are immutable, so one parse serves every repeat.
        # The entry keeps `fields` and `outcomes` alive, so their ids are not reused.
        key = (raw, want, id(fields), id(self.outcomes))
        cached = self._parsed.get(key)
        if cached is not None:
            return Condition(raw.strip(), cached[2], where)
        try:
            tree = parse(raw)
            check(tree, fields, want=want, outcomes=self.outcomes)
            self._parsed[key] = (fields, self.outcomes, tree)
        except ExprError as exc:
            assert isinstance(node, yaml.ScalarNode)
            line, col = self.locate(node, exc.col - 1)
            self.problems.append(Problem.at(self.file, line, col, f"{what}: {exc.message}"))
            return None
        return Condition(raw.strip(), tree, where)

    def template(
        self,
        node: yaml.Node | None,
        what: str,
        fields: Mapping[str, FieldSpec],
        *,
        currency: str,
    ) -> Template | None:
        """A script or guidance text, parsed and checked; each problem at its own column."""
        if node is None:
            return None
        raw = self.text(node, what)
        try:
            template = parse_template(raw)
        except TemplateError as exc:
            self._template_error(node, what, exc)
            return None
        errors = check_template(template, fields, currency=currency)
        for error in errors:
            self._template_error(node, what, error)
        return None if errors else template

    def _template_error(self, node: yaml.Node, what: str, exc: TemplateError) -> None:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, f"{what}: {exc.message}")
            return
        line, col = self.locate(node, exc.col - 1)
        self.problems.append(Problem.at(self.file, line, col, f"{what}: {exc.message}"))
