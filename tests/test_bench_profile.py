"""bench.profile's stage split: idle samples left out, a sample in the first stage it shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.profile import stage_shares

CORE, GRPC = (
    "the compiled core: facts, routing, policies, ranking, scripts",
    "gRPC and asyncio machinery",
)


def test_busy_samples_split_by_their_first_stage(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        # Waiting: not counted at all.
        "run (asyncio/runners.py:190);select_epoll_poll (selectmodule.c);epoll_wait (libc) 50\n"
        # The core called from a gRPC callback: the core comes first in the order.
        "task_step (_asynciomodule.c:2990);decide (decision_engine/decide/engine.py:101) 3\n"
        "task_step (_asynciomodule.c:2990);0x7f (grpc/_cython/cygrpc.so) 6\n"
        "main (x.py:1);something (y.py:2) 1\n"
    )
    shares, busy = stage_shares(raw)
    assert busy == 10
    assert shares[CORE] == pytest.approx(0.3)
    assert shares[GRPC] == pytest.approx(0.6)
    assert shares["other"] == pytest.approx(0.1)
    assert sum(shares.values()) == pytest.approx(1.0)
