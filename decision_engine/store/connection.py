"""One pipelined Redis connection for the request path.

Why not redis-py here: its asyncio client costs 90-150 µs of CPU per call inside
the gRPC server (measured with bench/, see README), more than the decision itself,
and it holds one connection per in-flight call. This connection sends every
concurrent request down one socket, writes all requests of an event-loop turn in
one syscall, and parses replies with hiredis; replies come back in order, so each
is matched to the oldest waiting caller. redis-py still does everything else
(imports, demo data, maintenance).
"""

from __future__ import annotations

import array
import asyncio
import collections
import enum
import fcntl
import hashlib
import ssl
import termios
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import hiredis
from redis.connection import parse_url

from decision_engine.errors import StoreUnavailableError

MAX_IN_FLIGHT = 10_000
# Error replies that mean "not now" rather than "wrong command": Redis is loading its
# data, busy with a script, failing over, out of memory, refusing writes after a disk
# error, or not letting us in. Every caller treats them like a lost connection.
_UNAVAILABLE_REPLIES = frozenset(
    {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "NOREPLICAS",
     "OOM", "MISCONF", "NOAUTH", "WRONGPASS", "NOPERM"}
)  # fmt: skip


class _ReplyError(Exception):
    """An error reply from Redis (hiredis builds these)."""


class Fate(enum.Enum):
    """Where a command that was not answered in time got to (`PipelinedConnection.fate`)."""

    UNSENT = "unsent"
    """Still in our buffer: the event loop never got round to writing it."""
    ANSWERED = "answered"
    """Redis had answered (the reply was read, or waits unread in the socket)."""
    WAITING = "waiting"
    """Written, and Redis has not answered yet."""


@dataclass(frozen=True, slots=True)
class Mark:
    """The position of the next command on one connection (`PipelinedConnection.mark`)."""

    protocol: object
    queued: int


def encode(*parts: str | bytes | float) -> bytes:
    """A command in the Redis protocol (RESP); hiredis packs it in C (2.5× faster for a
    script call), we pack what it refuses (a bool)."""
    try:
        # (hiredis's stub types the tuple as having one item.)
        return cast(bytes, hiredis.pack_command(parts))  # type: ignore[arg-type]
    except TypeError:
        return _encode(parts)


def _encode(parts: Sequence[str | bytes | float]) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8", replyError=_ReplyError)
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.buffer: list[bytes] = []
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Commands queued, written to the socket, and answered (replies come in order).
        self.queued = self.written = self.replied = 0
        # (commands written so far, when) for the last writes: when a command went out.
        self.writes: collections.deque[tuple[int, float]] = collections.deque(maxlen=256)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self.replied += 1
            future = self.waiting.popleft()
            if future.done():  # the caller gave up (timeout): drop its late reply
                continue
            if isinstance(reply, _ReplyError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        error = StoreUnavailableError(f"connection lost: {exc or 'closed'}")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.transport is None or self.transport.is_closing():
            raise StoreUnavailableError("connection is closed")
        if len(self.waiting) >= MAX_IN_FLIGHT:
            raise StoreUnavailableError("Redis is not keeping up")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.queued += 1
        if not self.buffer:
            asyncio.get_running_loop().call_soon(self._flush)
        self.buffer.append(command)
        return future

    def _flush(self) -> None:
        data, self.buffer = b"".join(self.buffer), []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.written = self.queued
            self.writes.append((self.written, asyncio.get_running_loop().time()))

    def unread(self) -> int:
        """Bytes Redis sent that wait in the socket, not yet read by the event loop."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return 0
        count = array.array("i", [0])
        try:
            fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
        except OSError:
            return 0
        return count[0]


class PipelinedConnection:
    """A lazily (re)connected, shared connection; `call` is safe from many tasks at once."""

    def __init__(self, url: str, *, connect_timeout: float = 1.0) -> None:
        self.url = url
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self._host = str(options.get("host", "localhost"))
        self._port = int(options.get("port", 6379))
        self._path = options.get("path")
        self._db = int(options.get("db", 0))
        self._username = options.get("username")
        self._password = options.get("password")
        self._ssl = ssl.create_default_context() if url.startswith("rediss://") else None
        self._connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    def send_nowait(self, *parts: str | bytes | float) -> asyncio.Future[Any]:
        """Queue a command on the open connection without waiting for its reply."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            raise StoreUnavailableError("connection is not open")
        return protocol.send(encode(*parts))

    def mark(self) -> Mark | None:
        """Where the next command will be; None while not connected."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            return None
        return Mark(protocol, protocol.queued)

    def fate(self, mark: Mark | None) -> tuple[Fate, float]:
        """Where the first command queued after `mark` is, and how long Redis has had it
        unanswered (s; 0 unless WAITING). Tells Redis being slow (WAITING for long) from
        this process being too busy to send the command or read the reply in time."""
        protocol = self._protocol
        if mark is None or protocol is not mark.protocol or protocol is None:
            return Fate.WAITING, float("inf")  # (re)connecting: Redis's doing
        position = mark.queued + 1
        if protocol.written < position:
            return Fate.UNSENT, 0.0
        if protocol.replied >= position or protocol.unread() > 0:
            return Fate.ANSWERED, 0.0
        sent = next((at for count, at in protocol.writes if count >= position), None)
        now = asyncio.get_running_loop().time()
        return Fate.WAITING, float("inf") if sent is None else now - sent

    async def call(self, *parts: str | bytes | float) -> Any:
        """Send one command and wait for its reply; StoreUnavailableError if Redis is not
        there or cannot answer now (e.g. LOADING), ReplyError for other error replies."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            protocol = await self._connect()
        try:
            return await protocol.send(encode(*parts))
        except _ReplyError as exc:
            raise _translated(exc) from None

    async def call_on(self, key: str, *parts: str | bytes | float) -> Any:
        """`call`: every key's commands go down this one connection."""
        return await self.call(*parts)

    async def pipeline(self, commands: Sequence[Sequence[str | bytes | float]]) -> list[Any]:
        """Send many commands at once and wait for all replies, in order; a reply that is an
        error comes back as the ReplyError or StoreUnavailableError `call` would raise.
        Cheaper than as many concurrent `call`s: one coroutine, not one each."""
        if not commands:
            return []
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            protocol = await self._connect()
        futures = [protocol.send(encode(*parts)) for parts in commands]
        replies = await asyncio.gather(*futures, return_exceptions=True)
        return [_translated(r) if isinstance(r, _ReplyError) else r for r in replies]

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None and self._protocol.transport is not None:
                return self._protocol
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self._connect_timeout):
                    if self._path:
                        transport, protocol = await loop.create_unix_connection(
                            _Protocol, self._path
                        )
                    else:
                        transport, protocol = await loop.create_connection(
                            _Protocol, self._host, self._port, ssl=self._ssl
                        )
                    try:
                        await self._handshake(protocol)
                    except BaseException:
                        transport.close()  # failed or cancelled: not ours to keep
                        raise
            except (OSError, TimeoutError, _ReplyError) as exc:
                raise StoreUnavailableError(f"unreachable: {exc!r}") from exc
            self._protocol = protocol
            return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        if self._password:
            auth = [self._username, self._password] if self._username else [self._password]
            await protocol.send(encode("AUTH", *auth))
        if self._db:
            await protocol.send(encode("SELECT", self._db))

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            await protocol.closed


class ReplyError(Exception):
    """Redis answered a command with an error (e.g. NOSCRIPT)."""


def _translated(exc: _ReplyError) -> Exception:
    message = str(exc)
    if message.split(" ", 1)[0] in _UNAVAILABLE_REPLIES:
        return StoreUnavailableError(message)
    return ReplyError(message)


class Connection(Protocol):
    """The request path's connection: a PipelinedConnection, or a ClusterConnection
    (store/cluster.py) that routes each command to its slot's master."""

    url: str

    async def call(self, *parts: str | bytes | float) -> Any: ...

    async def call_on(self, key: str, *parts: str | bytes | float) -> Any:
        """A keyless command (WAIT) on the connection that `key`'s commands go down."""
        ...

    async def pipeline(self, commands: Sequence[Sequence[str | bytes | float]]) -> list[Any]: ...

    def send_nowait(self, *parts: str | bytes | float) -> asyncio.Future[Any]: ...

    def mark(self) -> Mark | None: ...

    def fate(self, mark: Mark | None) -> tuple[Fate, float]: ...

    async def aclose(self) -> None: ...


class Script:
    """A Lua script run by its SHA1, sent along only when Redis does not have it cached."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(
        self, connection: Connection, keys: Sequence[str], args: Sequence[str | float]
    ) -> Any:
        try:
            return await connection.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise StoreUnavailableError(str(exc)) from exc
        # A restarted or flushed Redis forgot the script: EVAL sends it (and caches it).
        try:
            return await connection.call("EVAL", self.source, len(keys), *keys, *args)
        except ReplyError as exc:
            raise StoreUnavailableError(str(exc)) from exc

    async def many(
        self,
        connection: Connection,
        calls: Sequence[tuple[Sequence[str], Sequence[str | float]]],
    ) -> list[Any]:
        """The script once per (keys, args), all in one pipeline; the replies in order."""
        return await run_scripts(connection, [(self, call) for call in calls])


ScriptCall = tuple[Script, tuple[Sequence[str], Sequence[str | float]]]


async def run_scripts(connection: Connection, calls: Sequence[ScriptCall]) -> list[Any]:
    """Each script with its (keys, args), all in one pipeline (on a Redis Cluster, one
    per master, all at once); the replies in order. StoreUnavailableError for an error
    reply."""
    replies = await connection.pipeline(
        [("EVALSHA", script.sha, len(keys), *keys, *args) for script, (keys, args) in calls]
    )
    forgotten = [i for i, r in enumerate(replies) if _noscript(r)]
    if forgotten:
        again = await connection.pipeline(
            [("EVAL", calls[i][0].source, len(calls[i][1][0]), *calls[i][1][0], *calls[i][1][1])
             for i in forgotten]
        )  # fmt: skip
        for i, reply in zip(forgotten, again, strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise StoreUnavailableError(str(reply)) from reply
        if isinstance(reply, Exception):
            raise reply
    return replies


def _noscript(reply: object) -> bool:
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")
