"""Keep the loaded rulesets out of the cyclic garbage collector's full passes.

A full collection walks every tracked object, and a served ruleset is most of them: at
1,000 offers one pass took 16 ms, which explain=True's allocations triggered often
enough to cost 55 µs per decision on average, and which lands on whatever request is
running. Frozen objects are still freed by reference counting when a reload drops the
ruleset they belong to; rulesets hold no reference cycles (a test keeps it so), so
freezing them leaks nothing.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Tracked allocations (net) between young collections; Python's default is 700. A
decision with explain=True builds ~1,100 tuples at 1,000 offers, so at 700 a young pass
ran while they were alive, and they were walked again in the older generations before
the reply dropped them: 8 % of explain=True at 1,000 offers. Ten thousand live young
objects cost a few hundred KiB at most."""


def settle() -> None:
    """After the first load: collect what starting up left, then freeze the rest."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def freeze_new() -> None:
    """After a reload: freeze the new ruleset too. No collection first: the ruleset was
    built with the collector paused, so one pass would walk all of it, on the event loop."""
    gc.freeze()
