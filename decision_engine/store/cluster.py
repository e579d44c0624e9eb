"""A slot-routing connection for Redis Cluster on the request path.

Why not redis-py's cluster client here: its asyncio client costs 90-150 µs of CPU per
call (like its single-node client, measured with bench/) and holds one connection per
in-flight call to each node. This one keeps one `PipelinedConnection` per master, so all
concurrent commands bound for a node share one socket, one write per event-loop turn and
hiredis parsing; it only adds the routing (a key's slot, the slot's master) and follows
the cluster's redirects and failovers. redis-py's cluster clients (`sync_client`,
`async_client`) still do everything off the request path.

URLs: `redis+cluster://[user:password@]host:port[,host:port...]`, the startup nodes; the
credentials apply to every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

import redis
import redis.asyncio.cluster
import redis.cluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from decision_engine.config import REDIS_CLUSTER_SCHEME
from decision_engine.errors import StoreUnavailableError
from decision_engine.store.connection import Fate, Mark, PipelinedConnection, ReplyError

SCHEME = REDIS_CLUSTER_SCHEME
MAX_REDIRECTS = 5
TRYAGAIN_RETRIES = 3

Address = tuple[str, int]
Part = str | bytes | float

# Commands that name no key: any master can answer them.
_KEYLESS = frozenset(
    {"PING", "INFO", "TIME", "SCRIPT", "CLUSTER", "ECHO", "DBSIZE", "COMMAND", "CONFIG",
     "CLIENT", "FLUSHALL", "FLUSHDB", "LASTSAVE", "MEMORY", "ROLE", "WAIT", "READONLY",
     "READWRITE", "ASKING", "AUTH", "HELLO", "SELECT", "SLOWLOG", "LATENCY", "PUBLISH"}
)  # fmt: skip
# Failures after which the slot map may be stale: the node is gone, or the cluster is
# re-electing. (Messages of PipelinedConnection and Redis's CLUSTERDOWN.)
_LOST = ("connection lost", "connection is closed", "connection is not open", "unreachable",
         "CLUSTERDOWN", "no master serves slot")  # fmt: skip


def is_cluster_url(url: str) -> bool:
    return url.startswith(SCHEME)


def _split(url: str) -> tuple[str | None, str | None, list[Address]]:
    """(username, password, startup nodes) of a cluster URL."""
    if not is_cluster_url(url):
        raise ValueError(f"not a {SCHEME} URL")
    rest = url[len(SCHEME) :].split("/", 1)[0].split("?", 1)[0]
    username = password = None
    if "@" in rest:
        credentials, rest = rest.rsplit("@", 1)
        user, sep, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
        if not sep:  # `redis+cluster://secret@host` names a password, like redis://
            username, password = None, unquote(user) or None
    nodes: list[Address] = []
    for item in rest.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"cluster node {item!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return username, password, nodes


def startup_nodes(url: str) -> list[Address]:
    """The (host, port) of every node a cluster URL names."""
    return _split(url)[2]


def node_url(url: str, host: str, port: int) -> str:
    """A `redis://` URL for one node of the cluster `url` names, with its credentials."""
    username, password, _ = _split(url)
    credentials = ""
    if password is not None:
        credentials = f"{username or ''}:{password}@"
    elif username:
        credentials = f"{username}@"
    return f"redis://{credentials}{host}:{port}"


def sync_client(url: str, **kwargs: Any) -> redis.cluster.RedisCluster:
    """redis-py's cluster client for `url` (kwargs such as decode_responses pass through)."""
    username, password, nodes = _split(url)
    return redis.cluster.RedisCluster(
        startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in nodes],  # type: ignore[no-untyped-call]
        username=username,
        password=password,
        **kwargs,
    )


def sync_redis(url: str, **kwargs: Any) -> redis.Redis | redis.cluster.RedisCluster:
    """redis-py's client for any of our URLs: the cluster client for `redis+cluster://`."""
    if is_cluster_url(url):
        return sync_client(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)


def persistence(url: str, **kwargs: Any) -> dict[str, dict[str, str]]:
    """`CONFIG GET append*` of every master (the one server of a plain URL), by address."""
    if not is_cluster_url(url):
        with redis.Redis.from_url(url, decode_responses=True, **kwargs) as client:
            return {url.split("@")[-1]: dict(client.config_get("append*"))}
    with sync_client(url, decode_responses=True, **kwargs) as cluster:
        return {
            f"{node.host}:{node.port}": dict(
                cluster.get_redis_connection(node).config_get("append*")
            )
            for node in cluster.get_primaries()
        }


def async_client(url: str, **kwargs: Any) -> redis.asyncio.cluster.RedisCluster:
    """redis-py's asyncio cluster client for `url`."""
    username, password, nodes = _split(url)
    return redis.asyncio.cluster.RedisCluster(
        startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in nodes],
        username=username,
        password=password,
        **kwargs,
    )


def connect(url: str, *, connect_timeout: float = 1.0) -> PipelinedConnection | ClusterConnection:
    """The request-path connection for a `redis://`, `rediss://`, `unix://` or
    `redis+cluster://` URL."""
    if is_cluster_url(url):
        return ClusterConnection(url, connect_timeout=connect_timeout)
    return PipelinedConnection(url, connect_timeout=connect_timeout)


def _word(part: Part) -> str:
    return (part.decode() if isinstance(part, bytes) else str(part)).upper()


def _key(parts: Sequence[Part]) -> Part | None:
    """The key a command is routed by; None when it names none."""
    name = _word(parts[0])
    if name in ("EVAL", "EVALSHA"):
        return parts[3] if len(parts) > 3 and int(parts[2]) > 0 else None
    if name in ("XREAD", "XREADGROUP"):
        for i, part in enumerate(parts[1:-1], 1):
            if isinstance(part, str | bytes) and _word(part) == "STREAMS":
                return parts[i + 1]
        return None
    if name in _KEYLESS or len(parts) < 2:
        return None
    return parts[1]


def slot_of(parts: Sequence[Part]) -> int | None:
    key = _key(parts)
    if key is None:
        return None
    return key_slot(key if isinstance(key, bytes) else str(key).encode())


def _redirect(reply: object) -> tuple[str, int, Address] | None:
    """("MOVED" or "ASK", slot, new owner) of a redirect reply."""
    if not isinstance(reply, ReplyError):
        return None
    words = str(reply).split()
    if len(words) != 3 or words[0] not in ("MOVED", "ASK"):
        return None
    host, _, port = words[2].rpartition(":")
    return words[0], int(words[1]), (host, int(port))


def _lost(reply: object) -> bool:
    return isinstance(reply, StoreUnavailableError) and str(reply).startswith(_LOST)


def _tryagain(reply: object) -> bool:
    return isinstance(reply, StoreUnavailableError) and str(reply).startswith("TRYAGAIN")


class ClusterConnection:
    """Routes each command to its slot's master over that master's PipelinedConnection;
    `call` and `pipeline` are safe from many tasks at once, and follow MOVED, ASK,
    TRYAGAIN and failovers (bounded by 2 × connect_timeout)."""

    def __init__(self, url: str, *, connect_timeout: float = 1.0) -> None:
        self.url = url
        self._startup = startup_nodes(url)
        self._connect_timeout = connect_timeout
        self._nodes: dict[Address, PipelinedConnection] = {}
        self._slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self._masters: list[Address] = []
        self._refreshing: asyncio.Lock | None = None
        self._generation = 0  # slot maps loaded so far: a waiter skips a refresh just done
        self._background: asyncio.Task[None] | None = None
        self._closed = False

    # -- PipelinedConnection's interface ------------------------------------------------

    def send_nowait(self, *parts: Part) -> asyncio.Future[Any]:
        """Queue a command on its master's open connection without waiting; no redirect
        is followed (the reply may be a MOVED ReplyError)."""
        address = self._address(parts)
        connection = self._nodes.get(address) if address is not None else None
        if connection is None:
            raise StoreUnavailableError("connection is not open")
        return connection.send_nowait(*parts)

    def mark(self) -> Mark | None:
        # Many sockets: there is no one position to compare against.
        return None

    def fate(self, mark: Mark | None) -> tuple[Fate, float]:
        return Fate.WAITING, float("inf")

    async def call(self, *parts: Part) -> Any:
        """Send one command to its slot's master and wait for its reply;
        StoreUnavailableError if the cluster cannot answer now, ReplyError for other
        error replies."""
        node = self._nodes.get(address) if (address := self._address(parts)) else None
        if node is not None:  # the common case, without pipeline's bookkeeping
            try:
                return await node.call(*parts)
            except ReplyError as exc:
                redirect = _redirect(exc)
                if redirect is None:
                    raise
                if redirect[0] == "MOVED":
                    self._slots[redirect[1]] = redirect[2]
                    self._refresh_soon()
            except StoreUnavailableError as exc:
                if not (_lost(exc) or _tryagain(exc)):
                    raise
            # A redirect meant the command did not run: pipeline sends it where it belongs.
        [reply] = await self.pipeline([parts])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def call_on(self, key: str, *parts: Part) -> Any:
        """A keyless command (WAIT) on the connection of `key`'s master."""
        if self._generation == 0:
            await self._refresh(0)
        address = self._slots[key_slot(key.encode())]
        if address is None:
            raise StoreUnavailableError(f"no master serves the slot of {key}")
        return await self._node(address).call(*parts)

    async def pipeline(self, commands: Sequence[Sequence[Part]]) -> list[Any]:
        """Send many commands, each group of one master in one pipeline, all groups at once;
        the replies in order, an error reply as the exception `call` would raise."""
        if not commands:
            return []
        if self._generation == 0:
            await self._refresh(0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self._connect_timeout
        replies: list[Any] = [None] * len(commands)
        # Where each unanswered command goes: (node, whether ASKING goes first).
        targets: dict[int, tuple[Address | None, bool]] = {
            i: (self._address(parts), False) for i, parts in enumerate(commands)
        }
        redirects = [0] * len(commands)
        tries = [0] * len(commands)
        delay = 0.025
        while targets:
            seen = self._generation
            groups: dict[Address | None, list[int]] = {}
            for i, (address, _) in targets.items():
                groups.setdefault(address, []).append(i)
            sends = [self._send(address, [(commands[i], targets[i][1]) for i in indices])
                     for address, indices in groups.items()]  # fmt: skip
            answers = [await sends[0]] if len(sends) == 1 else await asyncio.gather(*sends)
            again: dict[int, tuple[Address | None, bool]] = {}
            pause = stale = False
            for indices, group_replies in zip(groups.values(), answers, strict=True):
                for i, reply in zip(indices, group_replies, strict=True):
                    replies[i] = reply
                    redirect = _redirect(reply)
                    if redirect is not None and redirects[i] < MAX_REDIRECTS:
                        kind, slot, owner = redirect
                        redirects[i] += 1
                        if kind == "MOVED":
                            # Cheap now (the one slot), the rest of the map in the background.
                            self._slots[slot] = owner
                            self._refresh_soon()
                        again[i] = (owner, kind == "ASK")
                    elif _tryagain(reply) and tries[i] < TRYAGAIN_RETRIES:
                        tries[i] += 1  # a slot mid-migration: the same place, a bit later
                        again[i] = targets[i]
                        pause = True
                    elif _lost(reply) and loop.time() < deadline:
                        pause = stale = True
                        again[i] = (None, False)  # routed again once the map is refreshed
            if not again:
                break
            if pause:  # (redirects are followed at once; the rest give the cluster a moment)
                await asyncio.sleep(min(delay * (1 + random.random()), 0.2))
                delay *= 2
            if stale:
                await self._refresh(seen, quiet=True)
            targets = {
                i: (self._address(commands[i]), False) if address is None else (address, ask)
                for i, (address, ask) in again.items()
            }
        return replies

    async def aclose(self) -> None:
        self._closed = True
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        nodes, self._nodes = list(self._nodes.values()), {}
        await asyncio.gather(*(node.aclose() for node in nodes))

    # -- routing ------------------------------------------------------------------------

    def _address(self, parts: Sequence[Part]) -> Address | None:
        slot = slot_of(parts)
        if slot is None:
            return random.choice(self._masters) if self._masters else None
        return self._slots[slot]

    def _node(self, address: Address) -> PipelinedConnection:
        node = self._nodes.get(address)
        if node is None:
            node = PipelinedConnection(
                node_url(self.url, *address), connect_timeout=self._connect_timeout
            )
            self._nodes[address] = node
        return node

    async def _send(
        self, address: Address | None, commands: Sequence[tuple[Sequence[Part], bool]]
    ) -> list[Any]:
        if address is None:
            return [StoreUnavailableError("no master serves slot")] * len(commands)
        batch: list[Sequence[Part]] = []
        for parts, asking in commands:
            if asking:
                batch.append(("ASKING",))
            batch.append(parts)
        try:
            replies = await self._node(address).pipeline(batch)
        except StoreUnavailableError as exc:
            return [exc] * len(commands)
        answers: list[Any] = []
        position = 0
        for _, asking in commands:
            # ASKING's own reply is OK; had it failed, so would the command after it.
            position += asking
            answers.append(replies[position])
            position += 1
        return answers

    # -- the slot map -------------------------------------------------------------------

    def _refresh_soon(self) -> None:
        if self._background is None or self._background.done():
            self._background = asyncio.get_running_loop().create_task(
                self._refresh(self._generation, quiet=True)
            )

    async def _refresh(self, seen: int, *, quiet: bool = False) -> None:
        """Load the slot map from the first node that answers CLUSTER SLOTS, unless a map
        newer than generation `seen` was loaded meanwhile."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            if self._generation > seen or self._closed:
                return
            candidates = list(dict.fromkeys([*self._masters, *self._nodes, *self._startup]))
            failures: list[str] = []
            for address in candidates:
                try:
                    reply = await self._node(address).call("CLUSTER", "SLOTS")
                except (StoreUnavailableError, ReplyError) as exc:
                    failures.append(f"{address[0]}:{address[1]}: {exc}")
                    continue
                self._load(address, reply)
                return
            if not quiet:
                raise StoreUnavailableError(f"no cluster node answers: {'; '.join(failures)}")

    def _load(self, asked: Address, reply: list[list[Any]]) -> None:
        slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        masters: dict[Address, None] = {}
        for start, end, master, *_replicas in reply:
            # An empty host means "the node you asked" (Redis 7 with no announced host).
            address = (str(master[0]) or asked[0], int(master[1]))
            masters[address] = None
            slots[int(start) : int(end) + 1] = [address] * (int(end) + 1 - int(start))
        self._slots, self._masters = slots, list(masters)
        self._generation += 1
        # Connections to nodes that no longer serve slots are left open: a failed master
        # that comes back as a replica answers MOVED, and a dead one costs nothing.
