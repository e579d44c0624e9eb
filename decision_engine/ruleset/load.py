"""Read a rules directory into a checked Ruleset, or every problem with file:line:col.

Any file may hold any of the top-level sections; a section's items may be spread
over several files (offers in one, routing in another). Files are read in name order.
The reading of nodes is in yaml_nodes.py and rule_nodes.py, the sections in sections.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from decision_engine.errors import Problem, RulesetError
from decision_engine.ruleset.rule_nodes import RuleNodes
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.sections import SECTIONS, build_ruleset
from decision_engine.ruleset.spec import Ruleset
from decision_engine.ruleset.yaml_nodes import yaml_files


def rule_files(directory: Path) -> list[Path]:
    """The rule files of a directory (tests/ and hidden files are not rules)."""
    return yaml_files(directory)


def content_version(files: list[Path], base: Path) -> str:
    """A short hash of the rule files' names and bytes: equal content, equal version."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(base)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def load_ruleset(directory: Path) -> Ruleset:
    """Parse and check every rule file; RulesetError lists all problems found."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RulesetError([Problem.at(str(directory), 0, 0, "rules directory not found")])
    files = rule_files(directory)
    if not files:
        raise RulesetError([Problem.at(str(directory), 0, 0, "no .yaml rule files in directory")])
    problems: list[Problem] = []
    docs: list[tuple[RuleNodes, yaml.MappingNode]] = []
    for path in files:
        reader = RuleNodes(str(path), problems)
        node = reader.compose(path.read_text(encoding="utf-8"))
        if node is None:
            continue
        if not isinstance(node, yaml.MappingNode):
            reader.error(node, f"a rule file is a mapping of sections ({', '.join(SECTIONS)})")
            continue
        docs.append((reader, node))
    ruleset = build_ruleset(docs, content_version(files, directory), problems)
    if problems:
        raise RulesetError(problems)
    assert ruleset is not None
    return ruleset


def load_schema(directory: Path) -> dict[str, FieldSpec]:
    """The profile fields a ruleset declares (for validating imports)."""
    fields = load_ruleset(directory).fields
    return {name: spec for name, spec in fields.items() if spec.source == "profile"}
