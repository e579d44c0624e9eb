"""Read a rules directory into a checked Ruleset, or every problem with file:line:col.

Any file may hold any of the top-level sections; a section's items may be spread
over several files (offers in one, routing in another). Files are read in name order.
The reading of nodes is in yaml_nodes.py and rule_nodes.py, the sections in sections.py.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
from collections.abc import Iterator
from pathlib import Path

import yaml

from decision_engine.errors import Problem, RulesetError, Where
from decision_engine.ruleset.rule_nodes import RuleNodes
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.sections import SECTIONS, build_ruleset
from decision_engine.ruleset.spec import Ruleset
from decision_engine.ruleset.yaml_nodes import yaml_files

DEFERRED = (("offers",), ("routing", "rules"))
"""The long lists of a ruleset, composed one item at a time as each is built (see
deferred_items.py); the offers' ids and categories are read before."""


def rule_files(directory: Path) -> list[Path]:
    """The rule files of a directory (tests/ and hidden files are not rules)."""
    return yaml_files(directory)


def content_version(contents: list[tuple[Path, bytes]], base: Path) -> str:
    """A short hash of the rule files' names and bytes: equal content, equal version."""
    digest = hashlib.sha256()
    for path, data in contents:
        digest.update(str(path.relative_to(base)).encode())
        digest.update(b"\0")
        digest.update(data)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def _read(path: Path, problems: list[Problem]) -> tuple[bytes, str | None]:
    """A rule file's bytes and text; the text is None (and a problem added) when the file
    cannot be read or is not UTF-8, so a bad save is a rejected ruleset, not a crash."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(Problem.at(str(path), 0, 0, f"cannot be read: {exc.strerror or exc}"))
        return b"", None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problems.append(Problem.at(str(path), line, 1, "not UTF-8 text; save the file as UTF-8"))
        return data, None
    # As reading in text mode does: \r\n and \r are line ends.
    return data, text.replace("\r\n", "\n").replace("\r", "\n")


def not_checked(directory: Path, count: int) -> Problem:
    """The note after the problems of files that cannot be read or parsed."""
    message = f"{count} other file{'' if count == 1 else 's'} not checked"
    return Problem(Where(str(directory), 0, 0), message, severity="note")


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off while a ruleset is built.

    Building one makes hundreds of thousands of objects that all stay alive, and each of
    the collector's passes over them finds nothing: at 10,000 offers they were 3 of the
    4.7 s of reading and compiling. Reference counting still frees what dies; the
    collector runs again afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_ruleset(directory: Path) -> Ruleset:
    """Parse and check every rule file; RulesetError lists all problems found.

    When a file cannot be read or parsed, only the problems of such files are reported,
    then a note of how many other files were not checked.
    """
    with paused_gc():
        return _load_ruleset(directory)


def _load_ruleset(directory: Path) -> Ruleset:
    directory = Path(directory)
    if not directory.is_dir():
        raise RulesetError([Problem.at(str(directory), 0, 0, "rules directory not found")])
    files = rule_files(directory)
    if not files:
        raise RulesetError([Problem.at(str(directory), 0, 0, "no .yaml rule files in directory")])
    problems: list[Problem] = []
    docs: list[tuple[RuleNodes, yaml.MappingNode]] = []
    contents: list[tuple[Path, bytes]] = []
    broken = 0
    for path in files:
        before = len(problems)
        # Read once: the version is the hash of the very bytes that were checked.
        data, text = _read(path, problems)
        contents.append((path, data))
        if text is not None:
            reader = RuleNodes(str(path), problems)
            node = reader.compose(text, defer=DEFERRED, keep=("id", "category"))
            if isinstance(node, yaml.MappingNode):
                docs.append((reader, node))
            elif node is not None:
                reader.error(node, f"a rule file is a mapping of sections ({', '.join(SECTIONS)})")
        broken += len(problems) > before
    if broken:
        # The other files' checks would report what follows from the broken file's rules
        # missing (a category no offer has, no default route), not what is wrong.
        others = len(files) - broken
        raise RulesetError([*problems, *([not_checked(directory, others)] if others else [])])
    ruleset = build_ruleset(docs, content_version(contents, directory), problems, str(directory))
    if problems:
        raise RulesetError(problems)
    assert ruleset is not None
    return ruleset


def load_schema(directory: Path) -> dict[str, FieldSpec]:
    """The profile fields a ruleset declares (for validating imports)."""
    return load_profile_rules(directory)[0]


def load_profile_rules(directory: Path) -> tuple[dict[str, FieldSpec], tuple[str, ...]]:
    """What writing profiles needs of a ruleset: the profile fields (to validate) and the
    audience fields of its notices (to index)."""
    ruleset = load_ruleset(directory)
    fields = {n: spec for n, spec in ruleset.fields.items() if spec.source == "profile"}
    return fields, ruleset.notices.audiences if ruleset.notices else ()
