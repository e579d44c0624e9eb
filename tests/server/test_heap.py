"""The served rulesets are kept out of the collector's full passes, freezing them leaks
nothing because a dropped ruleset leaves no cyclic garbage, and young collections wait
for more allocations than Python's default."""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys
from pathlib import Path

from bench.gen_rules import write_ruleset
from decision_engine.ruleset.compiled import load_compiled
from decision_engine.server import heap

DEMO_RULES = Path(__file__).resolve().parents[2] / "rules"


def test_a_dropped_ruleset_is_freed_by_reference_counting_alone(tmp_path: Path) -> None:
    write_ruleset(tmp_path, offers=300, routes=30)
    for directory in (DEMO_RULES, tmp_path):
        gc.collect()
        ruleset = load_compiled(directory)
        assert ruleset.offers
        del ruleset
        assert gc.collect() == 0, f"{directory}: a ruleset's cycles would leak once frozen"


def test_the_served_rulesets_are_frozen_and_a_reload_freezes_the_new_one(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(DEMO_RULES, rules)
    # In a process of its own: freezing is for the whole process.
    code = f"""
import asyncio, gc
from pathlib import Path
from decision_engine.config import Settings
from decision_engine.server.serving import reload_on_signal, served_rulesets

def tracked(obj):
    return any(o is obj for o in gc.get_objects())

rules = Path({str(rules)!r})
served = served_rulesets(Settings(rules_dir=rules))
first = served.rules.current
print(tracked(first))

async def reload():
    wanted = asyncio.Event()
    task = asyncio.create_task(reload_on_signal(served, wanted, "test"))
    path = rules / "ruleset.yaml"
    path.write_text(path.read_text() + "\\n# changed\\n")
    wanted.set()
    while served.rules.current is first:
        await asyncio.sleep(0.01)
    task.cancel()

asyncio.run(reload())
print(tracked(served.rules.current))
print(gc.get_threshold()[0])
"""
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    ).stdout.split()
    assert out[:2] == ["False", "False"], "a served ruleset is still walked by full collections"
    # A reply's objects die young instead of being walked by the older generations.
    assert out[2] == str(heap.YOUNG_THRESHOLD)
