"""Every YAML example in docs/rules.md works: sections load into the demo ruleset with no
error, and rule test cases pass against it. A doc that drifts from the engine fails here."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from decision_engine.authoring.case_report import format_text as cases_text
from decision_engine.authoring.case_run import run_cases
from decision_engine.authoring.check import check_rules

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "rules.md"
DEMO = ROOT / "rules"
NOW = "2025-03-03T10:00:00Z"

# A list of `- id:` items is part of a section; which one, the heading says.
FRAGMENT_SECTIONS = {
    "## offers": ("offers",),
    "## Contact policies, caps and channel limits": ("offers",),
    "## routing": ("routing", "rules"),
    "## arbitration": ("arbitration", "policies"),
    "## moments (live guidance)": ("moments",),
    "## notices (proactive care)": ("notices", "rules"),
    "### Texts": ("moments",),
}


class _RuleLoader(yaml.SafeLoader):
    """YAML as the rule files mean it: `on:` (a notice's event) is a key, not true."""


_RuleLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RuleLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_RuleLoader)  # a SafeLoader


@dataclass(frozen=True)
class Example:
    line: int
    heading: str
    text: str


def examples() -> list[Example]:
    source = DOCS.read_text()
    found: list[Example] = []
    heading = ""
    pattern = re.compile(r"^(#+ [^\n]*)$|^```yaml\n(.*?)^```", re.M | re.S)
    for match in pattern.finditer(source):
        if match.group(1):
            named = match.group(1) in FRAGMENT_SECTIONS or match.group(1).startswith("## ")
            heading = match.group(1) if named else heading
            continue
        # `...` stands for the parts of an item the example leaves out.
        text = "\n".join(line for line in match.group(2).splitlines() if line.strip() != "...")
        line = source[: match.start()].count("\n") + 2
        if text.count("\npattern:") > 1:
            # Alternatives of one `pattern:` key, one per paragraph: each its own example.
            for chunk in text.split("\n\n"):
                found.append(Example(line, heading, chunk))
                line += chunk.count("\n") + 2
        else:
            found.append(Example(line, heading, text))
    return found


def _merge(base: Any, overlay: Any) -> Any:
    """Mappings merge key by key; lists of items with ids merge item by item."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(overlay, list) and _ids(overlay):
        by_id = {item.get("id"): n for n, item in enumerate(base) if isinstance(item, dict)}
        merged_list = list(base)
        for item in overlay:
            n = by_id.get(item["id"])
            if n is None:
                merged_list.append(item)
            else:
                merged_list[n] = _merge(base[n], item)
        return merged_list
    return overlay


def _ids(items: list[Any]) -> bool:
    return all(isinstance(item, dict) and "id" in item for item in items)


def _overlay(directory: Path, sections: dict[str, Any]) -> None:
    """Merge sections into the demo file that holds each (or a new file)."""
    holders = {
        key: path
        for path in sorted(directory.glob("*.yaml"))
        for key in (_load(path.read_text()) or {})
    }
    for key, value in sections.items():
        path = holders.get(key, directory / "docs-example.yaml")
        document = _load(path.read_text()) if path.exists() else {}
        document[key] = _merge(document.get(key), value) if key in document else value
        path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value  # type: ignore[no-any-return]


def _moment_with(pattern: Any, n: int) -> dict[str, Any]:
    return {
        "id": f"docs-pattern-{n}",
        "pattern": pattern,
        "guidance": {"kind": "coaching", "title": "Docs example", "text": "Pattern works"},
    }


def _as_rules(example: Example) -> tuple[dict[str, Any], list[Any]]:
    """The example as ruleset sections to merge, and rule test cases to run."""
    data = _load(example.text)
    if isinstance(data, dict) and set(data) == {"pattern"}:
        return {"moments": [_moment_with(data["pattern"], example.line)]}, []
    if isinstance(data, dict) and "cases" in data:
        return {}, [data]
    if isinstance(data, dict) and set(data) == {"when"}:
        offer = {"id": "docs-condition", "category": "service", "value": 1, "script": "Hi"}
        return {"offers": [offer | data]}, []
    if isinstance(data, list) and all("name" in case for case in data):
        return {}, [{"now": NOW, "cases": data}]
    if isinstance(data, list):
        assert _ids(data), f"docs/rules.md:{example.line}: a list of what?"
        path = FRAGMENT_SECTIONS[example.heading]
        return _nest(path, data), []
    assert isinstance(data, dict), f"docs/rules.md:{example.line}: not a mapping or list"
    return data, []


EXAMPLES = examples()


def test_the_docs_have_examples_of_every_kind() -> None:
    kinds = [_as_rules(e) for e in EXAMPLES]
    assert len(EXAMPLES) >= 12
    assert sum(1 for sections, _ in kinds if sections) >= 8
    assert sum(1 for _, cases in kinds if cases) >= 3


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: f"rules.md:{e.line}")
def test_example_loads_and_its_cases_pass(tmp_path: Path, example: Example) -> None:
    directory = tmp_path / "rules"
    shutil.copytree(DEMO, directory, ignore=shutil.ignore_patterns("tests"))
    sections, case_files = _as_rules(example)
    _overlay(directory, sections)

    report = check_rules(directory)

    where = f"docs/rules.md:{example.line}"
    assert not report.errors, f"{where}: " + "\n".join(str(p) for p in report.errors)
    if not case_files:
        return
    cases_dir = tmp_path / "cases"
    cases_dir.mkdir()
    for n, content in enumerate(case_files):
        (cases_dir / f"example{n}.yaml").write_text(yaml.safe_dump(content, sort_keys=False))
    result = run_cases(directory, cases_dir=cases_dir)
    assert result.results, where
    assert result.ok, f"{where}:\n{cases_text(result)}"
