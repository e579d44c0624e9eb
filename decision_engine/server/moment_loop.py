"""The work of one moment process: its shards' events in, guidance out.

For each work entry of its shards (store/work_queue.py) it reads the interaction's new
events from the interaction's stream (store/interactions.py) and feeds them, in stream
order, to the detector (detector.py); before each event, the deadlines due by its event
time fire (`advance`), and when no work waits, those due by the wall clock. Each
Detection becomes a guidance item, written once by its guidance id; one that asks for a
decision gets one from the same DecisionSession as Decide, for the interaction's context
(its `started` fields, updated by the moments' `context`). Only then are the entries
acknowledged.

Recovery is replay. On start, and after any Redis failure mid-way (the detector's state
may then be ahead of what was written), the process drops what it holds, claims its
shards' pending entries, and feeds every live interaction's whole event stream into a
fresh detector, merged across interactions in event time, with the deadlines firing
between events as they did live. Guidance written before is not written again (its
guidance id), guidance that was detected but not written is written now, and the pending
entries, already fed, are acknowledged. So nothing acknowledged is lost, and nothing is
delivered twice.

Rule changes (SIGHUP, as for the gRPC workers): interactions that started before keep the
detector they started with; new ones get a detector of the new ruleset; an old detector is
closed when its last interaction ends. After a restart every interaction replays on the
ruleset of the day.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from decision_engine.decide.facts import build_facts
from decision_engine.decide.values import Context
from decision_engine.errors import StoreError
from decision_engine.moments.model import Detection
from decision_engine.server import metrics
from decision_engine.server.detector import DetectorFactory, MomentDetector
from decision_engine.server.interaction_convert import decision_json
from decision_engine.server.rulesets import ActiveRuleset
from decision_engine.server.session import DecisionSession
from decision_engine.server.throttle import Outage
from decision_engine.store.connection import Connection, ReplyError
from decision_engine.store.interactions import (
    GuidanceRecord,
    StoredEvent,
    end_guidance,
    forget_interaction,
    guidance_written,
    interaction_done,
    live_interactions,
    read_all_events,
    write_guidance,
)
from decision_engine.store.profiles import ProfileStore
from decision_engine.store.work_queue import (
    WorkItem,
    acknowledge,
    claim_pending,
    ensure_groups,
    read_work,
    trim_acknowledged,
)

log = logging.getLogger("decision_engine.moments")

IDLE_END_S = 4 * 3600.0
"""An interaction without an event for this long is ended (its desktop went away)."""
_MAX_BLOCK_MS = 1000
_HOUSEKEEPING_S = 30.0
_RETRY_S = 1.0
_REDIS_ERRORS = (StoreError, ReplyError, OSError, TimeoutError)
_CONTEXT_FIELDS = ("intent", "queue", "agent_id", "ivr_path")


@dataclass
class _Generation:
    """A detector and the ruleset version it was made for."""

    detector: MomentDetector
    version: str
    interactions: int = 0


@dataclass
class _Live:
    """What the process holds for one interaction it is feeding."""

    interaction_id: str
    generation: _Generation
    last_entry: str = ""
    customer_id: str = ""
    context: Context | None = None
    last_activity: float = 0.0


def started_first(events: Sequence[StoredEvent]) -> list[StoredEvent]:
    """The order events are fed in: `started` first, then the others in stream order
    (those held before it included)."""
    start = next((i for i, e in enumerate(events) if e.event.kind == "started"), None)
    if start is None:
        return list(events)
    return [events[start], *events[:start], *events[start + 1 :]]


def updated_context(context: Context, changes: Mapping[str, str]) -> Context:
    """The context with a moment's updates: its own fields by name, the rest attributes."""
    if not changes:
        return context
    own: dict[str, Any] = {k: v for k, v in changes.items() if k in _CONTEXT_FIELDS}
    if "sentiment" in changes:
        with contextlib.suppress(ValueError):
            own["sentiment"] = max(-1.0, min(1.0, float(changes["sentiment"])))
    others = {k: v for k, v in changes.items() if k not in _CONTEXT_FIELDS and k != "sentiment"}
    if others:
        own["attributes"] = {**context.attributes, **others}
    return dataclasses.replace(context, **own)


class MomentLoop:
    """Feeds the events of `shards` to detectors and writes their guidance."""

    def __init__(
        self,
        *,
        connection: Connection,
        reader: Connection,
        shards: Sequence[int],
        consumer: str,
        factory: DetectorFactory,
        rules: ActiveRuleset,
        session: DecisionSession,
        store: ProfileStore,
        idle_end_s: float = IDLE_END_S,
    ) -> None:
        self._conn = connection
        self._reader = reader
        self.shards = tuple(shards)
        self.consumer = consumer
        self._factory = factory
        self._rules = rules
        self._session = session
        self._store = store
        self._idle_end_s = idle_end_s
        self._live: dict[str, _Live] = {}
        self._generations: list[_Generation] = []
        self._clock = 0.0
        self._replaying = False
        self._recovered = False
        self._housekept = time.monotonic()
        self._outage = Outage(
            log,
            failing="moment process cannot work (%s), %d time(s); replaying once Redis answers",
            back="moment process works again after %d failure(s)",
        )
        self._profile_outage = Outage(
            log,
            failing="customer profile not read for a started interaction (%s), %d time(s); "
            "its moments see no profile",
            back="customer profiles read again after %d failure(s)",
        )

    @property
    def live(self) -> int:
        """Interactions being fed."""
        return len(self._live)

    # -- the loop ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Recover, then work until `stop` is set; a Redis failure means replaying."""
        while not stop.is_set():
            try:
                if not self._recovered:
                    await self.recover()
                await self.step()
            except _REDIS_ERRORS as exc:
                self._outage.failed(str(exc) or type(exc).__name__)
                self._recovered = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _RETRY_S)
            else:
                self._outage.recovered()

    async def recover(self) -> int:
        """Start afresh from Redis: claim the shards' pending work, replay every live
        interaction into a fresh detector, then acknowledge the pending entries (their
        events are fed by then). Returns the interactions replayed."""
        self._reset()
        await ensure_groups(self._conn, self.shards)
        for shard in self.shards:
            await claim_pending(self._conn, shard, self.consumer)
        streams: dict[str, list[StoredEvent]] = {}
        for shard in self.shards:
            for interaction_id in await live_interactions(self._conn, shard):
                events = await read_all_events(self._conn, interaction_id)
                if not events:
                    await forget_interaction(self._conn, interaction_id)  # expired
                    continue
                streams[interaction_id] = started_first(events)
        self._replaying = True
        try:
            for interaction_id, stored in _merged(streams):
                live = self._live.get(interaction_id) or self._begin(interaction_id)
                await self._feed(live, stored)
            await self._advance_to(time.time())
        finally:
            self._replaying = False
        if streams:
            metrics.MOMENT_REPLAYS.inc(len(streams))
            log.info(
                "%s replayed %d live interaction(s) of shards %s",
                self.consumer,
                len(streams),
                ",".join(map(str, self.shards)),
            )
        while items := await read_work(self._conn, self.shards, self.consumer, pending=True):
            await self._process(items)
        self._recovered = True
        self._gauge()
        return len(streams)

    async def step(self) -> int:
        """Wait for work (at most until the next deadline), do it, fire what is due;
        returns the work entries done."""
        self._follow_reloads()
        items = await read_work(
            self._reader, self.shards, self.consumer, pending=False, block_ms=self._block_ms()
        )
        if items:
            await self._process(items)
        await self._advance_to(time.time())
        if time.monotonic() - self._housekept >= _HOUSEKEEPING_S:
            await self._housekeeping()
        self._gauge()
        return len(items)

    def close(self) -> None:
        self._reset()

    # -- work -------------------------------------------------------------------------

    async def _process(self, items: Sequence[WorkItem]) -> None:
        """Feed the new events of every interaction named, then acknowledge the entries."""
        for interaction_id in dict.fromkeys(item.interaction_id for item in items):
            if not interaction_id:
                continue  # trimmed while pending: its events are replayed from the stream
            live = self._live.get(interaction_id)
            if live is None:
                if await interaction_done(self._conn, interaction_id):
                    continue
                events = started_first(await read_all_events(self._conn, interaction_id))
                if not events:
                    await forget_interaction(self._conn, interaction_id)
                    continue
                live = self._begin(interaction_id)
            else:
                events = await read_all_events(self._conn, interaction_id, after=live.last_entry)
            for stored in events:
                if interaction_id not in self._live:
                    break  # ended
                await self._feed(live, stored)
        await acknowledge(self._conn, items)

    def _begin(self, interaction_id: str) -> _Live:
        self._follow_reloads()
        generation = self._generations[-1]
        generation.interactions += 1
        live = _Live(interaction_id, generation)
        self._live[interaction_id] = live
        return live

    async def _feed(self, live: _Live, stored: StoredEvent) -> None:
        event = stored.event
        await self._advance_to(event.occurred_at)
        profile = None
        if event.kind == "started":
            data = event.data
            live.customer_id = str(data.get("customer_id", ""))
            live.context = Context(
                channel=str(data.get("channel", "")),
                intent=str(data.get("intent", "")),
                queue=str(data.get("queue", "")),
                agent_id=str(data.get("agent_id", "")),
            )
            profile = await self._profile(live, event.occurred_at)
        detections = live.generation.detector.feed(event, profile)
        live.last_entry = stored.entry_id
        live.last_activity = stored.published_at or time.time()
        for detection in detections:
            await self._write(detection, published_at=stored.published_at)
        if event.kind == "ended":
            await self._finish(live)

    async def _profile(self, live: _Live, now: float) -> dict[str, Any] | None:
        """The customer's facts for the moments, as Decide would see them."""
        if not live.customer_id or live.context is None:
            return None
        try:
            state = await self._store.load(live.customer_id, interaction=None, now=now)
        except StoreError as exc:
            self._profile_outage.failed(str(exc))
            return None
        self._profile_outage.recovered()
        return build_facts(
            self._rules.current, state, live.context, now=now, interaction_id=live.interaction_id
        )

    async def _write(self, detection: Detection, *, published_at: float) -> None:
        """The detection as a guidance item, once; re-decided first when it asks."""
        interaction_id = detection.interaction_id
        live = self._live.get(interaction_id)
        if live is not None and live.context is not None:
            # Also on replay: the context later moments decide with is rebuilt.
            live.context = updated_context(live.context, detection.context)
        if await guidance_written(self._conn, interaction_id, detection.guidance_id):
            return
        decision = ""
        if detection.decide and live is not None and live.context is not None:
            decided = await self._session.decide(
                customer_id=live.customer_id,
                interaction_id=interaction_id,
                context=live.context,
                max_offers=0,
                explain=False,
                time_remaining=None,
            )
            decision = decision_json(decided)
        outcome_id = ""
        if live is not None and live.customer_id and live.context is not None:
            outcome_id = self._session.guidance_outcome_id(
                customer_id=live.customer_id,
                interaction_id=interaction_id,
                channel=live.context.channel,
                moment_id=detection.moment_id,
            )
        record = GuidanceRecord(
            guidance_id=detection.guidance_id,
            moment_id=detection.moment_id,
            interaction_id=interaction_id,
            kind=detection.kind,
            title=detection.title,
            text=detection.text,
            severity=detection.severity,
            event_ids=detection.event_ids,
            at=detection.at,
            decision=decision,
            route_queue=detection.route_queue,
            route_priority=detection.route_priority,
            supersedes=detection.supersedes,
            published_at=published_at,
            outcome_id=outcome_id,
        )
        now = time.time()
        _, written = await write_guidance(self._conn, record, now=now)
        if written:
            metrics.GUIDANCE_WRITTEN.labels(detection.moment_id).inc()
            if published_at and not self._replaying:
                metrics.GUIDANCE_LATENCY.observe(max(0.0, now - published_at))

    async def _finish(self, live: _Live) -> None:
        """The interaction is over: the detector forgets it, its guidance ends."""
        generation = live.generation
        generation.detector.end(live.interaction_id)
        await end_guidance(self._conn, live.interaction_id, now=time.time())
        del self._live[live.interaction_id]
        generation.interactions -= 1
        if generation.interactions == 0 and generation is not self._generations[-1]:
            generation.detector.close()
            self._generations.remove(generation)

    async def _advance_to(self, now: float) -> None:
        """Fire the deadlines due by event time `now` (never going back in time)."""
        if now < self._clock:
            return
        self._clock = now
        for generation in list(self._generations):
            deadline = generation.detector.next_deadline()
            if deadline is None or deadline > now:
                continue
            for detection in generation.detector.advance(now):
                await self._write(detection, published_at=0.0)

    def _block_ms(self) -> int:
        deadlines = [d for g in self._generations if (d := g.detector.next_deadline()) is not None]
        if not deadlines:
            return _MAX_BLOCK_MS
        return int(max(1.0, min(_MAX_BLOCK_MS, (min(deadlines) - time.time()) * 1000)))

    # -- rules, housekeeping ------------------------------------------------------------

    def _follow_reloads(self) -> None:
        ruleset = self._rules.current
        current = self._generations[-1]
        if ruleset.version == current.version:
            return
        self._generations.append(_Generation(self._factory(ruleset), ruleset.version))
        log.info(
            "%s: new interactions get moments of ruleset %s (%d stay on %s)",
            self.consumer,
            ruleset.version,
            current.interactions,
            current.version,
        )
        if current.interactions == 0:
            current.detector.close()
            self._generations.remove(current)

    async def _housekeeping(self) -> None:
        self._housekept = time.monotonic()
        cutoff = time.time() - self._idle_end_s
        for live in [x for x in self._live.values() if x.last_activity < cutoff]:
            log.info("%s: interaction idle for %g s; ended", self.consumer, self._idle_end_s)
            await self._finish(live)
        for shard in self.shards:
            await trim_acknowledged(self._conn, shard)

    def _reset(self) -> None:
        for generation in self._generations:
            generation.detector.close()
        ruleset = self._rules.current
        self._generations = [_Generation(self._factory(ruleset), ruleset.version)]
        self._live.clear()
        self._clock = 0.0

    def _gauge(self) -> None:
        metrics.LIVE_INTERACTIONS.set(len(self._live))


def _merged(streams: Mapping[str, list[StoredEvent]]) -> Iterable[tuple[str, StoredEvent]]:
    """Every interaction's events, each in its own order, merged by event time."""
    heap = [
        (events[0].event.occurred_at, n, interaction_id, 0)
        for n, (interaction_id, events) in enumerate(streams.items())
        if events
    ]
    heapq.heapify(heap)
    while heap:
        _, n, interaction_id, index = heapq.heappop(heap)
        events = streams[interaction_id]
        yield interaction_id, events[index]
        if index + 1 < len(events):
            heapq.heappush(
                heap, (events[index + 1].event.occurred_at, n, interaction_id, index + 1)
            )
