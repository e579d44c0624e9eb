"""Exercise a rules directory's moments in a throwaway process before they go live.

durable_rules is C: a rule set it cannot take may corrupt memory and kill the process
(SIGSEGV), which no `except` catches. So `trial(directory)` runs

    python -m decision_engine.moments.trial DIR

in a child process: it loads the rules, builds the MomentEngine (the limits of
limits.py), then drives synthetic interactions through it (synthetic.py): first each
moment alone, then all of them interleaved over many concurrent interactions. The
parent turns every way the child can fail into a RulesetError:

    exit 0            passed
    exit 1            problems in the rules (file:line:col), as the loader reports them
    exit 3            durable_rules reported an error (MomentError)
    killed by signal  it crashed: attributed to the moment it was exercising
    too slow          it did not finish within `timeout` seconds

The child tells the parent which moment it is exercising on stderr (`moment`, its
file:line:col and its id, tab-separated), so a crash names the moment that caused it.

Test hook: with DECISION_ENGINE_TRIAL_CRASH=segfault in its environment the child kills
itself with SIGSEGV before doing anything (with `moment:<id>`, when it starts exercising
that moment), so the parent's handling of a crash can be tested without a real
durable_rules crash. Nothing else reads that variable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from decision_engine.errors import MomentError, Problem, RulesetError, Where

CRASH_HOOK = "DECISION_ENGINE_TRIAL_CRASH"
"""Test hook (see the module docstring)."""
_MOMENT = "moment\t"
_END_OF_TIME = 30 * 86_400.0


def trial(directory: Path, *, timeout: float = 120.0) -> None:
    """Raise RulesetError unless the directory's moments run in a child process."""
    directory = Path(directory)
    command = [sys.executable, "-m", "decision_engine.moments.trial", str(directory)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        message = f"the moment trial did not finish within {timeout:g} s; the moments cost too much"
        raise RulesetError([Problem.at(str(directory), 0, 0, message)]) from None
    if done.returncode == 0:
        return
    if done.returncode < 0:
        raise RulesetError([_crash(directory, -done.returncode, done.stderr)])
    report = _report(done.stdout)
    problems = report.get("problems")
    if done.returncode == 1 and isinstance(problems, list):
        raise RulesetError(
            [Problem.at(p["file"], p["line"], p["column"], p["message"]) for p in problems]
        )
    error = report.get("error")
    tail = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
    text = error if isinstance(error, str) else tail[0]
    where = _last_moment(done.stderr) or Where(str(directory), 0, 0)
    raise RulesetError([Problem(where, f"the moment trial failed: {text}")])


def _crash(directory: Path, number: int, stderr: str) -> Problem:
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    where = _last_moment(stderr)
    blame = "" if where is None else f" while exercising moment {_last_id(stderr)}"
    message = (
        f"the moment trial crashed ({name}){blame}: durable_rules cannot run these moments, "
        "and a server would crash the same way; simplify or remove the moment"
    )
    return Problem(where or Where(str(directory), 0, 0), message)


def _last_moment(stderr: str) -> Where | None:
    lines = [line for line in stderr.splitlines() if line.startswith(_MOMENT)]
    if not lines:
        return None
    location = lines[-1].split("\t")[1]
    file, line, column = location.rsplit(":", 2)
    return Where(file, int(line), int(column))


def _last_id(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(_MOMENT)]
    return lines[-1].split("\t")[2] if lines else ""


def _report(stdout: str) -> dict[str, object]:
    for line in reversed(stdout.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


# -- the child -------------------------------------------------------------------------------


def _child(directory: Path) -> int:
    hook = os.environ.get(CRASH_HOOK, "")
    if hook == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    # Imported here: the parent needs none of this (nor durable_rules) to supervise.
    from decision_engine.moments.engine import MomentEngine
    from decision_engine.moments.synthetic import Synthesizer, stream
    from decision_engine.ruleset.compiled import load_compiled

    try:
        ruleset = load_compiled(directory)
        engine = MomentEngine(ruleset)
    except RulesetError as exc:
        problems = [
            {"file": p.file, "line": p.line, "column": p.column, "message": p.message}
            for p in exc.problems
        ]
        print(json.dumps({"ok": False, "problems": problems}))
        return 1
    detected: set[str] = set()
    events = 0
    try:
        synth = Synthesizer(ruleset)
        for index, spec in enumerate(ruleset.source.moments):
            print(f"{_MOMENT}{spec.where}\t{spec.id}", file=sys.stderr, flush=True)
            if hook == f"moment:{spec.id}":
                os.kill(os.getpid(), signal.SIGSEGV)
            profile = synth.profile((spec,))
            for event in synth.interaction(f"trial-{index}", 1_750_000_000.0 + index, (spec,)):
                detected.update(d.moment_id for d in engine.feed(event, profile))
                events += 1
        print("mixed interactions", file=sys.stderr, flush=True)
        last = 0.0
        for event, facts in stream(ruleset, interactions=64):
            detected.update(d.moment_id for d in engine.advance(event.occurred_at))
            detected.update(d.moment_id for d in engine.feed(event, facts))
            last = max(last, event.occurred_at)
            events += 1
        detected.update(d.moment_id for d in engine.advance(last + _END_OF_TIME))
        engine.close()
    except MomentError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 3
    print(json.dumps({"ok": True, "events": events, "detected": sorted(detected)}))
    return 0


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m decision_engine.moments.trial RULES_DIR", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(_child(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
