"""The outcome reconciler in the background of a worker (see store/reconcile.py).

worker.py runs it in worker 0 of every replica; the reconciler's lease in Redis lets
one of them work at a time, and another take over within the lease (30 s) when that
one stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from decision_engine.errors import StoreError
from decision_engine.server.throttle import Outage
from decision_engine.store.connection import ReplyError
from decision_engine.store.reconcile import Reconciler

log = logging.getLogger(__name__)

RECONCILE_EVERY_S = 5.0
_REDIS_ERRORS = (StoreError, ReplyError, OSError, TimeoutError)


async def run_reconciler(reconciler: Reconciler, *, every_s: float = RECONCILE_EVERY_S) -> None:
    """On start, then every `every_s` while it holds the lease, until cancelled."""
    outage = Outage(
        log,
        failing=f"outcome reconciler failed (%s), %d time(s); retrying every {every_s:g} s",
        back="outcome reconciler works again after %d failure(s)",
    )
    try:
        while True:
            try:
                if await reconciler.lead():
                    applied = await reconciler.run_once()
                    if applied:
                        log.info(
                            "reconciler applied %d outcome(s) that were logged but not applied",
                            applied,
                        )
            except _REDIS_ERRORS as exc:
                outage.failed(str(exc) or type(exc).__name__)
            else:
                outage.recovered()
            await asyncio.sleep(every_s)
    finally:
        with contextlib.suppress(*_REDIS_ERRORS):
            await reconciler.release()
