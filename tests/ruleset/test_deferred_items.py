"""Offers composed one by one read exactly as the whole file composed at once."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
import yaml

from decision_engine.errors import Problem
from decision_engine.ruleset.deferred_items import DeferredItem
from decision_engine.ruleset.load import load_ruleset
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
    "empty list": "offers: []\n",
    "a line break that is not a newline": 'offers:\n- id: a\n  t: "x\u2028 y"\n- id: b\nz: 1\n',
}


def shape(node: Any, line_base: int = 0) -> Any:
    """A node's tag, value, line and column, all the way down."""
    mark = (node.start_mark.line + line_base, node.start_mark.column)
    if isinstance(node, yaml.ScalarNode):
        return (node.tag, node.value, node.style, mark)
    if isinstance(node, yaml.SequenceNode):
        return (node.tag, [shape(v, line_base) for v in node.value], mark)
    return (node.tag, [(shape(k, line_base), shape(v, line_base)) for k, v in node.value], mark)


def offers_of(root: Any) -> Any:
    return next(v for k, v in root.value if k.value == "offers")


def read_deferred(text: str) -> tuple[Any, list[Any]]:
    """The root composed with deferral, and each offer composed as the load reads it."""
    reader = NodeReader("f.yaml", [])
    root = reader.compose(text, defer="offers", keep=("id", "category"))
    items = []
    for item in offers_of(root).value:
        with reader.composed(item) as composed:
            items.append(shape(composed, reader.line_base))
    return root, items


@pytest.mark.parametrize("text", DEFERRABLE.values(), ids=DEFERRABLE.keys())
def test_deferred_offers_compose_as_the_whole_file_does(text: str) -> None:
    whole = yaml.compose(text, Loader=yaml.CSafeLoader)
    root, items = read_deferred(text)
    assert all(isinstance(item, DeferredItem) for item in offers_of(root).value)
    assert items == [shape(item) for item in offers_of(whole).value]
    # The other sections are composed in place, at their own lines.
    others = [(shape(k), shape(v)) for k, v in root.value if k.value != "offers"]
    assert others == [(shape(k), shape(v)) for k, v in whole.value if k.value != "offers"]


def test_a_deferred_offer_keeps_its_id_and_category_for_the_other_sections() -> None:
    root, _ = read_deferred(DEFERRABLE["plain"])
    stubs = root.value[0][1].value
    assert [[(k.value, v.value) for k, v in stub.value] for stub in stubs] == [
        [("id", "a")],
        [("id", "b"), ("category", "c")],
    ]


@pytest.mark.parametrize("text", NOT_DEFERRED.values(), ids=NOT_DEFERRED.keys())
def test_what_could_read_differently_is_composed_whole(text: str) -> None:
    root = NodeReader("f.yaml", []).compose(text, defer="offers", keep=("id",))
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
    assert NodeReader("f.yaml", found).compose(text, defer="offers") is None
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
