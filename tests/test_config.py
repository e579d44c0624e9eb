"""Safe defaults: loopback unless TLS and authentication are configured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from decision_engine.config import Settings, is_loopback
from decision_engine.errors import ConfigError

RULES = Path(__file__).resolve().parents[1] / "rules"


def test_defaults_are_loopback() -> None:
    settings = Settings(rules_dir=RULES)
    assert is_loopback(settings.host) and is_loopback(settings.metrics_host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.com", ""])
def test_exposed_without_tls_and_auth_is_refused(host: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TLS .* and authentication"):
        Settings(rules_dir=RULES, host=host)
    tokens = tmp_path / "tokens"
    tokens.write_text("")
    with pytest.raises(ConfigError, match="without TLS"):
        Settings(rules_dir=RULES, host=host, auth_tokens=tokens)
    assert Settings(rules_dir=RULES, host=host, insecure=True).insecure


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback(host: str) -> None:
    assert is_loopback(host)


def test_half_configured_security_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="go together"):
        Settings(rules_dir=RULES, tls_cert=cert)
    with pytest.raises(ConfigError, match="needs tls_cert"):
        Settings(rules_dir=RULES, tls_client_ca=cert)
    with pytest.raises(ConfigError, match="jwt_audience"):
        Settings(rules_dir=RULES, jwt_key=cert)
    with pytest.raises(ConfigError, match="is not a file"):
        Settings(rules_dir=RULES, auth_tokens=tmp_path / "missing")


def test_serve_refuses_to_expose_itself() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "decision_engine.cli", "serve", "--rules", str(RULES),
         "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0 without TLS" in result.stderr
    assert "--insecure" in result.stderr


def test_a_bad_token_file_stops_serve_at_start(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("sha256:abc desktop x\n")
    result = subprocess.run(
        [sys.executable, "-m", "decision_engine.cli", "serve", "--rules", str(RULES),
         "--auth-tokens", str(tokens), "--port", "0", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{tokens}: line 1: a sha256 hash has 64 hex digits" in result.stderr


def test_moment_workers_are_bounded_by_the_shards() -> None:
    from decision_engine.config import MAX_MOMENT_WORKERS
    from decision_engine.store.interactions import MOMENT_SHARDS

    assert MAX_MOMENT_WORKERS == MOMENT_SHARDS  # each moment process owns a shard at least
    assert Settings(rules_dir=RULES).moment_workers == 1
    with pytest.raises(ConfigError, match=r"moment_workers must be 0\.\.16"):
        Settings(rules_dir=RULES, moment_workers=17)
    with pytest.raises(ConfigError, match="max_watches"):
        Settings(rules_dir=RULES, max_watches=0)
