"""Compose long lists of a rule file item by item, instead of the whole file's tree at once.

A 10,000-offer file's composed tree is ~80 MiB: most of what a load needs on the way, and
none of it is needed once each offer is built. One pass over the parser's events finds
where each item's text is; the rest of the file is composed with each item replaced by a
one-character stand-in (its lines kept, so every other node keeps its line), and an item
is composed from its own text when it is read.

Only what composes the same either way is deferred: a block list of block mappings with
no anchors or aliases inside, in a single document without %TAG directives, in a text
whose line breaks are newlines. Anything else (and any syntax error, which the
whole-file compose then reports) is not deferred.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, cast

import yaml

E = TypeVar("E", bound=yaml.Event)

MAP_TAG = "tag:yaml.org,2002:map"


class DeferredItem(yaml.MappingNode):
    """A list item not composed yet: the scalar values read before the items are built
    (an offer's id and category), and where the item's text is. As a node, an empty
    mapping at the item's marks."""

    def __init__(
        self,
        kept: dict[str, str],
        start_mark: yaml.Mark,
        end_mark: yaml.Mark,
        span: tuple[int, int],
    ) -> None:
        super().__init__(MAP_TAG, [], start_mark, end_mark)
        self.kept = kept
        self.span = span

    def source(self, text: str) -> str:
        """The item's text, indented as in the file, so composed nodes keep their columns
        (their lines count from the item's first line)."""
        start, end = self.span
        return " " * self.start_mark.column + text[start:end]


KeyPath = tuple[str, ...]
"""Keys from the root mapping to a list: ("offers",), ("routing", "rules")."""


@dataclass(frozen=True, slots=True)
class Deferral:
    """The file's text with the items stood in for, and each list's items in order."""

    text: str
    items: dict[KeyPath, list[DeferredItem]]


class _NotDeferred(Exception):
    """The file holds something an item-by-item compose would not read the same way."""


def defer_items(
    text: str, paths: tuple[KeyPath, ...], keep: tuple[str, ...], parser: type[yaml.SafeLoader]
) -> Deferral | None:
    """The items of the lists at `paths` (the first of each), deferred, each keeping its
    `keep` keys' scalars; None when nothing is deferred."""
    if any(mark in text for mark in _UNCOUNTED):
        return None
    loader = parser(text)
    try:
        items = _root(loader.get_event, set(paths), keep)
    except (yaml.YAMLError, _NotDeferred):
        return None
    finally:
        loader.dispose()
    items = {path: listed for path, listed in items.items() if listed}
    every = sorted((i for listed in items.values() for i in listed), key=lambda i: i.span)
    if not every or not all(_at(text, i.start_mark) and _at(text, i.end_mark) for i in every):
        return None
    return Deferral(_stood_in(text, every), items)


_UNCOUNTED = ("\ufeff", "\x85", "\u2028", "\u2029")
"""What libyaml does not count as Python does: a byte-order mark (no index), and line
breaks that are not a newline (a line, where the stand-ins keep only newlines)."""


def _at(text: str, mark: yaml.Mark) -> bool:
    """Whether a mark's index is at its line and column in `text` (indexes are the slices
    cut: a mark that disagrees would cut an item's text in the wrong place)."""
    line_start = mark.index - mark.column
    if line_start < 0 or mark.index > len(text):
        return False
    return line_start == 0 if mark.line == 0 else text[line_start - 1] == "\n"


def swap_in(root: yaml.Node, path: KeyPath, items: list[DeferredItem]) -> bool:
    """Put the deferred items in place of their stand-ins in the composed root."""
    node: yaml.Node | None = root
    for key in path:
        if not isinstance(node, yaml.MappingNode):
            return False
        node = next((v for k, v in node.value if k.value == key), None)
    if not isinstance(node, yaml.SequenceNode) or len(node.value) != len(items):
        return False
    node.value = list(items)
    return True


def _stood_in(text: str, items: list[DeferredItem]) -> str:
    """The text with each item replaced by `_`, its line ends and its last line's indent."""
    pieces: list[str] = []
    last = 0
    for item in items:
        start, end = item.span
        newlines = text.count("\n", start, end)
        # A block mapping ends where the next item's dash is: the spaces before it stay.
        indent = end - text.rfind("\n", start, end) - 1 if newlines else 0
        pieces += (text[last:start], "_", "\n" * newlines, " " * indent)
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


Get = Callable[[], yaml.Event]
Found = dict[KeyPath, list[DeferredItem]]


def _root(get: Get, paths: set[KeyPath], keep: tuple[str, ...]) -> Found:
    _expect(get(), yaml.StreamStartEvent)
    document = _expect(get(), yaml.DocumentStartEvent)
    if getattr(document, "tags", None):
        raise _NotDeferred
    _expect(get(), yaml.MappingStartEvent)
    found: Found = {}
    _mapping(get, (), paths, keep, found)
    _expect(get(), yaml.DocumentEndEvent)
    _expect(get(), yaml.StreamEndEvent)  # a second document is the whole compose's error
    return found


def _mapping(
    get: Get, at: KeyPath, paths: set[KeyPath], keep: tuple[str, ...], found: Found
) -> None:
    """Read a mapping to its end (its start read), deferring the first list at each path."""
    while not isinstance(event := get(), yaml.MappingEndEvent):
        here = (*at, event.value) if isinstance(event, yaml.ScalarEvent) else None
        if here is None or here in found or not any(p[: len(here)] == here for p in paths):
            _skip(get, event)  # the key
            _skip(get, get())  # its value
            continue
        value = get()
        if getattr(value, "anchor", None):
            raise _NotDeferred  # an alias elsewhere would be another path to the items
        if here in paths:
            sequence = _expect(value, yaml.SequenceStartEvent)
            if sequence.flow_style:
                raise _NotDeferred
            found[here] = _items(get, keep)
        elif isinstance(value, yaml.MappingStartEvent):
            _mapping(get, here, paths, keep, found)
        else:
            _skip(get, value)


def _items(get: Get, keep: tuple[str, ...]) -> list[DeferredItem]:
    # One flat loop (no call per event): this pass is a third of reading 10,000 offers.
    scalar, alias = yaml.ScalarEvent, yaml.AliasEvent
    opens, closes = (yaml.MappingStartEvent, yaml.SequenceStartEvent), yaml.CollectionEndEvent
    items: list[DeferredItem] = []
    while not isinstance(start := get(), yaml.SequenceEndEvent):
        if not isinstance(start, yaml.MappingStartEvent) or start.flow_style or start.anchor:
            raise _NotDeferred
        kept: dict[str, str] = {}
        depth, is_key, key = 1, True, None
        while True:
            event = get()
            if isinstance(event, scalar):
                if event.anchor is not None:
                    raise _NotDeferred
                if depth == 1:
                    if is_key:
                        key = event
                    elif key is not None and key.value in keep:
                        kept.setdefault(key.value, event.value)  # the first, as read
                    is_key = not is_key
            elif isinstance(event, opens):
                if event.anchor is not None:
                    raise _NotDeferred
                if depth == 1:
                    key = None  # a collection as a key is not one of `keep`
                    is_key = not is_key
                depth += 1
            elif isinstance(event, alias) or not isinstance(event, closes):
                raise _NotDeferred
            else:
                depth -= 1
                if depth == 0:
                    break
        first, last = _marks(start)[0], _marks(event)[1]
        items.append(DeferredItem(kept, first, last, (first.index, last.index)))
    return items


def _skip(get: Get, event: yaml.Event) -> None:
    """Read past the node `event` starts."""
    depth = 0
    while True:
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if depth == 0:
            return
        event = get()


def _marks(event: yaml.Event) -> tuple[yaml.Mark, yaml.Mark]:
    # The parser marks every event (libyaml's marks are its own type; nodes hold those too).
    return cast(yaml.Mark, event.start_mark), cast(yaml.Mark, event.end_mark)


def _expect(event: yaml.Event, kind: type[E]) -> E:
    if not isinstance(event, kind):
        raise _NotDeferred
    return event
