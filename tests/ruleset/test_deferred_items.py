"""Offers composed one by one read exactly as the whole file composed at once."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
import yaml

from decision_engine.errors import Problem
from decision_engine.ruleset.deferred_items import DeferredItem
from decision_engine.ruleset.load import DEFERRED, load_ruleset
from decision_engine.ruleset.offer_section import declared_category, declared_id
from decision_engine.ruleset.yaml_nodes import NodeReader
from tests.ruleset.test_load import at, base, problems, write

DEFERRABLE = {
    "plain": "offers:\n- id: a\n  value: 1\n- id: b\n  category: c\n",
    "indented, other sections around": (
        "ruleset: {label: x}\noffers:\n  - id: a\n    when: [x > 1]\n  - id: b\n"
        "    script: |\n      two\n      lines\nrouting:\n  default: {queue: q}\n"
    ),
    "comments, blank lines, unicode before": (
        "# é€\nofferte: {x: 'ü'}\noffers:\n# one\n- id: a  # é\n\n  value: 'é€ x'\n"
        '  # between\n\n-   id: b\n    title: "multi\n      line"\n'
    ),
    "dash on its own line": "offers:\n-\n  id: a\n  value: 1\n- id: b\n",
    "nested lists and a complex key": (
        "offers:\n- id: a\n  channels:\n  - - x\n    - y\n  ? [k]\n  : v\n- id: b\n"
    ),
    "anchors outside the offers": "x: &v 1\ny: *v\noffers:\n- id: a\n",
    "routing rules, and offers after them": (
        "routing:\n  default: {queue: q}\n  rules:\n    - id: r1\n      when: x > 1\n"
        "    - id: r2\n      queue: z\n  other: 1\noffers:\n- id: a\n"
    ),
    "routing rules alone, a second routing key left whole": (
        "routing:\n  rules:\n  - id: r1\n  - id: r2\nrouting:\n  rules:\n  - id: r3\n"
    ),
    # libyaml counts neither in its indexes: offsets would cut the items' text wrong.
    "byte-order mark, characters past the BMP": "\ufeffx: 😀\noffers:\n- id: 😀a\n- id: b\n",
}

NOT_DEFERRED = {
    "alias across items": "offers:\n- &o {id: a}\n- id: b\n  copy: *o\n",
    "anchor in an item": "offers:\n- id: a\n  p: &p 1\nx: *p\n",
    "flow list": "offers: [{id: a}, {id: b}]\n",
    "flow item": "offers:\n- {id: a}\n- id: b\n",
    "scalar item": "offers:\n- a\n- id: b\n",
    "tag directive": "%TAG !e! tag:example.com,2000:\n---\noffers:\n- id: !e!x a\n",
    "offers not a list": "offers: {id: a}\n",
    "routing in flow style": "routing: {rules: [{id: r1}, {id: r2}]}\n",
    "an anchored routing section": "routing: &r\n  rules:\n  - id: r1\nagain: *r\n",
    "empty list": "offers: []\n",
    "a line break that is not a newline": 'offers:\n- id: a\n  t: "x\u2028 y"\n- id: b\nz: 1\n',
}


def shape(node: Any, line_base: int = 0, reader: NodeReader | None = None) -> Any:
    """A node's tag, value, line and column, all the way down; with `reader`, a deferred
    item is composed (as a load reads it) and shown as its nodes."""
    if reader is not None and isinstance(node, DeferredItem):
        with reader.composed(node) as composed:
            return shape(composed, reader.line_base)
    mark = (node.start_mark.line + line_base, node.start_mark.column)
    if isinstance(node, yaml.ScalarNode):
        return (node.tag, node.value, node.style, mark)
    if isinstance(node, yaml.SequenceNode):
        return (node.tag, [shape(v, line_base, reader) for v in node.value], mark)
    pairs = [(shape(k, line_base, reader), shape(v, line_base, reader)) for k, v in node.value]
    return (node.tag, pairs, mark)


def deferred(text: str) -> tuple[NodeReader, Any]:
    reader = NodeReader("f.yaml", [])
    return reader, reader.compose(text, defer=DEFERRED, keep=("id", "category"))


@pytest.mark.parametrize("text", DEFERRABLE.values(), ids=DEFERRABLE.keys())
def test_deferred_lists_compose_as_the_whole_file_does(text: str) -> None:
    reader, root = deferred(text)
    assert any(isinstance(n, DeferredItem) for n in _nodes(root))
    assert shape(root, reader=reader) == shape(yaml.compose(text, Loader=yaml.CSafeLoader))


def test_a_deferred_offer_keeps_its_id_and_category_for_the_other_sections() -> None:
    _, root = deferred(DEFERRABLE["plain"])
    stubs = root.value[0][1].value
    assert [stub.kept for stub in stubs] == [{"id": "a"}, {"id": "b", "category": "c"}]
    assert [declared_id(s) for s in stubs] == ["a", "b"]
    assert [declared_category(s) for s in stubs] == ["general", "c"]


@pytest.mark.parametrize("text", NOT_DEFERRED.values(), ids=NOT_DEFERRED.keys())
def test_what_could_read_differently_is_composed_whole(text: str) -> None:
    _, root = deferred(text)
    assert shape(root) == shape(yaml.compose(text, Loader=yaml.CSafeLoader))
    assert not any(isinstance(n, DeferredItem) for n in _nodes(root))


def _nodes(node: Any) -> list[Any]:
    found = [node]
    children = node.value if isinstance(node, yaml.SequenceNode) else []
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    for child in children:
        found += _nodes(child)
    return found


def test_a_syntax_error_is_reported_by_the_whole_file() -> None:
    found: list[Problem] = []
    text = "offers:\n- id: a\n- id: b\n  value: [1\n"
    assert NodeReader("f.yaml", found).compose(text, defer=DEFERRED) is None
    assert len(found) == 1 and str(found[0]).startswith("f.yaml:5:"), found


def test_problems_in_deferred_offers_are_at_their_file_lines(tmp_path: Path) -> None:
    base(tmp_path)
    path = write(
        tmp_path,
        "offers.yaml",
        """
        # the offers, indented
        offers:
          - id: a
            value: 1
            when: clv > 1
            script: Hi

          # a second one, after a blank line
          - id: b
            value: 1
            when: |
              clv > 1 and
              churn_risk >< 2
            script: Hi
          - id: c
            value: 1
            script: "Hello {nope}"
        """,
    )
    found = problems(tmp_path)
    assert len(found) == 2, found
    assert found[0].startswith(at(path, "< 2")), found
    assert found[1].startswith(at(path, "{nope}")), found


def test_offers_are_not_all_composed_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At 10,000 offers the whole file's tree was ~80 MiB of a load's ~120.
    from bench.gen_rules import write_ruleset
    from decision_engine.ruleset import sections

    write_ruleset(tmp_path, offers=200, routes=5)
    whole = yaml.compose((tmp_path / "offers.yaml").read_text(), Loader=yaml.CSafeLoader)
    in_the_file = len(_nodes(whole))
    del whole
    alive: list[int] = []
    real = sections.offer

    def watched(*args: Any, **kwargs: Any) -> Any:
        if not alive:
            alive.append(sum(isinstance(o, yaml.Node) for o in gc.get_objects()))
        return real(*args, **kwargs)

    monkeypatch.setattr(sections, "offer", watched)
    assert len(load_ruleset(tmp_path).offers) == 200
    assert alive[0] < in_the_file / 3, (alive, in_the_file)
