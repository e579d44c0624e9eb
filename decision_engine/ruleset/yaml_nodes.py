"""Read a YAML file into nodes that keep their marks, and report problems at file:line:col.

Rule files and case files are both read this way: `NodeReader` belongs to one file, so
every node it is handed is located in that file, and every problem it finds is appended
to a list the caller owns (one list may gather the problems of many files).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

from decision_engine.errors import Problem, Where
from decision_engine.ruleset.deferred_items import DeferredItem, KeyPath, defer_items, swap_in
from decision_engine.ruleset.typecheck import did_you_mean

Tags = dict[tuple[object, object, object], str]
"""Resolved tags by (node kind, text, implicit flags)."""

# libyaml's parser keeps line marks and parses large rulesets about twice as fast.
_BASE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BASE_LOADER):  # type: ignore[valid-type,misc]
    """The safe loader, with each scalar's tag resolved once per distinct text.

    Tags depend only on the node's kind, text and implicit flags (the safe loader has
    no path resolvers), and a rule file repeats most of its keys and values: resolving
    each one with its regular expressions was a third of reading 10,000 offers.
    """

    def __init__(self, stream: str, tags: Tags | None = None) -> None:
        super().__init__(stream)
        self._tags = {} if tags is None else tags

    def resolve(self, kind: type[yaml.Node], value: object, implicit: object) -> str:
        key = (kind, value, implicit)
        tag = self._tags.get(key)
        if tag is None:
            tag = self._tags[key] = super().resolve(kind, value, implicit)
        return tag


def yaml_files(directory: Path) -> list[Path]:
    """The .yaml/.yml files of a directory, in name order (hidden files are skipped)."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith(".")
    )


class NodeReader:
    """Walks the nodes of one YAML file and collects located problems."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        self._text = ""
        self._lines: Sequence[str] | None = None
        self._tags: Tags = {}
        self.line_base = 0
        """Lines before the deferred item being read (its nodes' lines count from it)."""

    @property
    def lines(self) -> Sequence[str]:
        """The file's source lines (once composed), to locate inside multi-line scalars.

        Split when first asked for: a 10,000-offer file's lines are ~20 MiB, and only a
        problem inside a multi-line value needs them.
        """
        if self._lines is None:
            self._lines = self._text.splitlines()
        return self._lines

    def compose(
        self, text: str, *, defer: tuple[KeyPath, ...] = (), keep: tuple[str, ...] = ()
    ) -> yaml.Node | None:
        """The file's root node; None when it is empty or not YAML (a problem, then).

        The items of the lists at the `defer` key paths are DeferredItems (holding only
        their `keep` keys' scalars) where that reads the same: `composed()` composes each
        when it is read.
        """
        # libyaml skips a byte-order mark without counting it in its marks' indexes.
        text = text.removeprefix("\ufeff")
        self._text, self._lines, self.line_base = text, None, 0
        deferral = defer_items(text, defer, keep, _BASE_LOADER) if defer else None
        if deferral is not None:
            before = len(self.problems)
            root = self._compose(deferral.text)
            if root is not None and all(
                swap_in(root, path, items) for path, items in deferral.items.items()
            ):
                return root
            del self.problems[before:]  # the whole file's compose says what is wrong
        return self._compose(text)

    @contextlib.contextmanager
    def composed(self, node: yaml.Node) -> Iterator[yaml.Node | None]:
        """The node, composed if deferred, located in the file while it is read; None
        (and a problem) if its text does not compose."""
        if not isinstance(node, DeferredItem):
            yield node
            return
        self.line_base = node.start_mark.line
        try:
            yield self._compose(node.source(self._text))
        finally:
            self.line_base = 0

    def _compose(self, text: str) -> yaml.Node | None:
        loader = _Loader(text, self._tags)
        try:
            root: yaml.Node | None = loader.get_single_node()
            return root
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line, col = (mark.line + 1 + self.line_base, mark.column + 1) if mark else (0, 0)
            self.problems.append(Problem.at(self.file, line, col, f"YAML syntax: {exc.problem}"))
            return None
        finally:
            loader.dispose()

    @staticmethod
    def top_scalar(node: yaml.Node, key: str) -> str | None:
        """The scalar under `key` in a mapping (the first, if written twice), composed or
        deferred; None when there is none."""
        if isinstance(node, DeferredItem):
            return node.kept.get(key)
        if isinstance(node, yaml.MappingNode):
            for key_node, value in node.value:
                if key_node.value == key and isinstance(value, yaml.ScalarNode):
                    return str(value.value)
        return None

    # -- locating and reporting -----------------------------------------------------------

    def where(self, node: yaml.Node) -> Where:
        mark = node.start_mark
        return Where(self.file, mark.line + 1 + self.line_base, mark.column + 1)

    def error(self, node: yaml.Node | None, message: str) -> None:
        """A problem at `node`, or with the whole file when there is no node."""
        where = self.where(node) if node is not None else Where(self.file, 0, 0)
        self.problems.append(Problem(where, message))

    def locate(self, node: yaml.ScalarNode, offset: int) -> tuple[int, int]:
        """File line and column (1-based) of character `offset` of a scalar's value.

        A value may span lines (block `|`/`>` or a folded plain scalar); its text is
        the source lines without indentation, joined by one character each.
        """
        start, end = node.start_mark, node.end_mark
        top, bottom = start.line + self.line_base, end.line + self.line_base
        lines = self.lines
        quoted = 1 if node.style in ("'", '"') else 0
        if top == bottom or not lines:
            return top + 1, start.column + 1 + quoted + offset
        segments: list[tuple[int, int, str]] = []
        block = node.style in ("|", ">")
        for number in range(top + (1 if block else 0), min(bottom, len(lines) - 1) + 1):
            text = lines[number]
            first = start.column + quoted if number == top else len(text) - len(text.lstrip())
            last = end.column - quoted if number == bottom else len(text)
            if number == bottom and block:
                break
            segments.append((number, first, text[first:last].rstrip()))
        for number, first, text in segments:
            if offset <= len(text):
                return number + 1, first + offset + 1
            offset -= len(text) + 1
        return top + 1, start.column + 1

    # -- shapes ---------------------------------------------------------------------------

    def entries(
        self,
        node: yaml.Node,
        what: str,
        allowed: tuple[str, ...] | None = None,
        *,
        list_known: bool = False,
    ) -> dict[str, yaml.Node] | None:
        """A mapping's values by key; None (and a problem) when `node` is not a mapping.

        Duplicate and unknown keys are problems and left out; `list_known` names the
        allowed keys when no near miss does.
        """
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping")
            return None
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in out:
                self.error(key_node, f"duplicate key {key!r} in {what}")
            elif allowed is not None and key not in allowed:
                hint = did_you_mean(key, list(allowed))
                if list_known and not hint:
                    hint = f" (known: {', '.join(allowed)})"
                self.error(key_node, f"unknown key {key!r} in {what}{hint}")
            else:
                out[key] = value_node
        return out

    def sequence(self, node: yaml.Node | None, what: str) -> list[yaml.Node]:
        """A list's items; [] when absent, and [] with a problem when not a list."""
        if node is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{what} must be a list")
            return []
        return list(node.value)
