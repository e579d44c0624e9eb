"""Whether a decision explores is drawn from its interaction: a retried Decide, on any
replica, explores (or not) with the same seed; over many interactions, the share set."""

from __future__ import annotations

from decision_engine.server.session import exploration_seed


def test_the_same_interaction_draws_the_same_seed() -> None:
    seeds = [exploration_seed(0.5, "C-1", f"i-{n}") for n in range(200)]
    again = [exploration_seed(0.5, "C-1", f"i-{n}") for n in range(200)]
    assert seeds == again
    assert None in seeds and any(s is not None for s in seeds)
    # Another customer with the same interaction id draws on its own.
    assert [exploration_seed(0.5, "C-2", f"i-{n}") for n in range(200)] != seeds


def test_over_many_interactions_the_share_explores() -> None:
    drawn = [exploration_seed(0.05, "C-1", f"i-{n}") for n in range(20_000)]
    share = sum(s is not None for s in drawn) / len(drawn)
    assert 0.04 < share < 0.06
    assert len({s for s in drawn if s is not None}) == sum(s is not None for s in drawn)


def test_no_exploration_and_always_exploring() -> None:
    assert {exploration_seed(0.0, "C-1", f"i-{n}") for n in range(100)} == {None}
    assert None not in {exploration_seed(1.0, "C-1", f"i-{n}") for n in range(100)}
    assert exploration_seed(0.0, "C-1", "") is None
    assert exploration_seed(1.0, "C-1", "") is not None
