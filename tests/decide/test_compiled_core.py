"""The compiled core (build_core.py) decides exactly as its sources do, and a stale build
is never run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gen_rules import write_ruleset
from decision_engine import _core

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "decision_engine"
compiled = pytest.mark.skipif(
    not _core.SHARED_LIBRARY.is_file(),
    reason="the core is not compiled here (make core)",
)

# Plain, with history, explained, learned and exploring decisions of one population.
DECISIONS = """
import sys
from pathlib import Path
from bench.gen_rules import demo_schema_values
from bench.micro import NOW, learned_state, population, with_history
from decision_engine import _core
from decision_engine.decide.engine import decide
from decision_engine.ruleset.compiled import load_compiled

ruleset = load_compiled(Path(sys.argv[1]))
cases = population(200, demo_schema_values()[0], seed=int(sys.argv[3]))
cases += with_history(ruleset, cases)
learned = learned_state(ruleset)
lines = [_core.MODE]
for n, (state, context) in enumerate(cases):
    for options in ({}, {"explain": True}, {"learned": learned},
                    {"learned": learned, "sample_seed": n}, {"max_offers": 1}):
        decision = decide(ruleset, state=state, context=context, now=NOW, decision_id="d",
                          interaction_id="i-1", **options)
        lines.append(repr(decision))
Path(sys.argv[2]).write_text("\\n".join(lines))
"""


def _decisions(rules: Path, out: Path, *, pure: bool, seed: int) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != _core.PURE_ENV}
    if pure:
        env[_core.PURE_ENV] = "1"
    subprocess.run([sys.executable, "-c", DECISIONS, str(rules), str(out), str(seed)],
                   check=True, cwd=ROOT, env=env)  # fmt: skip
    return out.read_text().splitlines()


@compiled
@pytest.mark.parametrize(("offers", "seed"), [(40, 1), (400, 2)])
def test_compiled_and_source_decide_alike(tmp_path: Path, offers: int, seed: int) -> None:
    write_ruleset(tmp_path / "rules", offers=offers, routes=max(5, offers // 10), seed=seed)
    built = _decisions(tmp_path / "rules", tmp_path / "built.txt", pure=False, seed=seed)
    source = _decisions(tmp_path / "rules", tmp_path / "source.txt", pure=True, seed=seed)
    assert built[0].startswith("compiled"), built[0]
    assert source[0] == f"source ({_core.PURE_ENV} is set)"
    assert len(built) == len(source) == 1 + 400 * 5
    for n, (a, b) in enumerate(zip(built[1:], source[1:], strict=True)):
        assert a == b, f"decision {n}: compiled {a[:300]} / source {b[:300]}"


@compiled
def test_a_source_newer_than_the_build_runs_from_source(tmp_path: Path) -> None:
    copy = tmp_path / "decision_engine"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    probe = (
        "from decision_engine import _core; import decision_engine.decide.engine as e, "
        "decision_engine.ruleset.closures as c; print(_core.MODE, e.__file__, c.__file__)"
    )
    env = {k: v for k, v in os.environ.items() if k != _core.PURE_ENV}
    env["PYTHONPATH"] = str(tmp_path)

    def mode() -> list[str]:
        out = subprocess.run([sys.executable, "-c", probe], check=True, env=env, cwd=tmp_path,
                             capture_output=True, text=True).stdout  # fmt: skip
        return out.split()

    first = mode()
    assert first[0] == "compiled", first
    assert first[-2].endswith(_core._SUFFIX) and first[-1].endswith(_core._SUFFIX)
    edited = copy / "ruleset" / "closures.py"
    shared = next(copy.glob(f"core__mypyc{_core._SUFFIX}"))
    later = shared.stat().st_mtime + 10
    os.utime(edited, (later, later))
    after = mode()
    assert " ".join(after[:3]) == "source (decision_engine.ruleset.closures changed", after
    # All of the core, not only the edited module: compiled modules call each other in C.
    assert after[-2].endswith("engine.py") and after[-1].endswith("closures.py")
