"""Who is calling: bearer tokens (a file of token hashes, or JWTs) → a role.

Roles grant permissions; every RPC needs one permission (server/gate.py). Token
files and JWT key files are re-read when they change, so credentials rotate
without a restart. Nothing here logs or counts a token.

Token file, one credential per line (`decision-engine tokens add` writes them):

    # sha256 of the token   role     name
    sha256:9f86d081884c7d65…  desktop  floor-1
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from decision_engine.errors import ConfigError, PermissionDeniedError, UnauthenticatedError

log = logging.getLogger(__name__)

DECIDE = "decide"
OUTCOME = "outcome"
EXPLAIN = "explain"
"""Explanations show raw profile values ("clv 48000 is not < 1000")."""
ADMIN = "admin"
PUBLISH = "publish"
"""Publish interaction events (live guidance)."""
WATCH = "watch"
"""Watch an interaction's guidance (it carries decisions: offers, scripts, routing).
Every role that may watch may publish, so Guide, which does both, needs `watch`."""

NOTIFY = "notify"
"""Publish business events (which send customers notices) and post delivery receipts."""

ROLES: Mapping[str, frozenset[str]] = {
    # A connector (CTI, speech analytics, a fraud or billing system, a messaging provider's
    # receipts) that feeds events and sees nothing back.
    "publisher": frozenset({PUBLISH, NOTIFY}),
    # A desktop cannot make the engine text or mail customers.
    "desktop": frozenset({DECIDE, OUTCOME, PUBLISH, WATCH}),
    "analyst": frozenset({DECIDE, OUTCOME, EXPLAIN, PUBLISH, WATCH}),
    "admin": frozenset({DECIDE, OUTCOME, EXPLAIN, PUBLISH, WATCH, NOTIFY, ADMIN}),
}
_HASH_PREFIX = "sha256:"
_RELOAD_CHECK_S = 1.0
_JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
"""Asymmetric only: the server holds no secret that could mint tokens."""
_JWT_CACHE_S = 30.0
_JWT_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: its role and what the role allows."""

    role: str
    permissions: frozenset[str]

    def require(self, permission: str, what: str) -> None:
        if permission not in self.permissions:
            raise PermissionDeniedError(
                "role", f"role {self.role!r} may not {what} (needs a role with {permission!r})"
            )


ANONYMOUS = Caller("anonymous", ROLES["admin"])
"""Every caller when no credentials are configured (loopback only, see config.py)."""


def hash_token(token: str) -> str:
    """How a token is kept in a token file."""
    return _HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _role(name: str, where: str) -> frozenset[str]:
    try:
        return ROLES[name]
    except KeyError:
        raise ConfigError(f"{where}: unknown role {name!r} (one of {', '.join(ROLES)})") from None


class _Watched:
    """A file re-read when its size, mtime or inode change (checked at most every second)."""

    def __init__(self, path: Path, parse: Callable[[str], Any]) -> None:
        self.path = path
        self._parse = parse
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self.value: Any = None
        self._reload(first=True)

    def current(self) -> Any:
        now = time.monotonic()
        if now - self._checked >= _RELOAD_CHECK_S:
            self._checked = now
            self._reload(first=False)
        return self.value

    def _reload(self, *, first: bool) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
            if stamp == self._stamp:
                return
            value = self._parse(self.path.read_text())
        except (OSError, ConfigError, ValueError) as exc:
            if first:
                raise ConfigError(f"{self.path}: {exc}") from None
            # Keep serving the last good credentials; a half-written file is common.
            log.error("%s not reloaded, keeping the previous credentials: %s", self.path, exc)
            self._stamp = None
            return
        self._stamp, self.value = stamp, value
        if not first:
            log.info("credentials reloaded from %s", self.path)


def parse_token_file(text: str) -> dict[str, Caller]:
    """Token hash → caller; ConfigError names the line that is wrong."""
    callers: dict[str, Caller] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith(_HASH_PREFIX):
            raise ConfigError(f"line {number}: expected 'sha256:<hex> <role> [name]'")
        digest = parts[0]
        if len(digest) != len(_HASH_PREFIX) + 64:
            raise ConfigError(f"line {number}: a sha256 hash has 64 hex digits")
        callers[digest] = Caller(parts[1], _role(parts[1], f"line {number}"))
    return callers


class TokenFile:
    """Bearer tokens whose sha256 is listed in a file."""

    def __init__(self, path: Path) -> None:
        self._file = _Watched(path, parse_token_file)

    def caller(self, token: str) -> Caller | None:
        callers: dict[str, Caller] = self._file.current()
        # Looked up by hash: what a timing difference could reveal is a hash, not a token.
        return callers.get(hash_token(token))


def _jwt_keys(text: str) -> dict[str | None, Any]:
    """kid → key, from a PEM public key (kid None) or a JWKS document."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            jwks = jwt.PyJWKSet.from_dict(json.loads(stripped))
        except (jwt.PyJWKSetError, json.JSONDecodeError) as exc:
            raise ConfigError(f"not a JWKS document: {exc}") from None
        return {key.key_id: key.key for key in jwks.keys}
    try:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        return {None: load_pem_public_key(text.encode())}
    except ValueError as exc:
        raise ConfigError(f"not a PEM public key: {exc}") from None


class JwtVerifier:
    """JWTs signed by a key in a PEM or JWKS file, with audience, expiry and a role claim."""

    def __init__(
        self, key_file: Path, *, audience: str, issuer: str | None, role_claim: str
    ) -> None:
        self._keys = _Watched(key_file, _jwt_keys)
        self._audience = audience
        self._issuer = issuer
        self._role_claim = role_claim
        self._cache: dict[str, tuple[Caller, float]] = {}

    def caller(self, token: str) -> Caller | None:
        """The caller a JWT stands for; None if it is not a JWT at all."""
        if token.count(".") != 2:
            return None
        now = time.time()
        hit = self._cache.get(token)
        if hit is not None and now < hit[1]:
            return hit[0]
        caller, expires = self._verify(token, now)
        if len(self._cache) >= _JWT_CACHE_SIZE:
            self._cache.clear()
        # Re-verified at least every _JWT_CACHE_S, so a rotated-out key stops working soon.
        self._cache[token] = (caller, min(expires, now + _JWT_CACHE_S))
        return caller

    def _verify(self, token: str, now: float) -> tuple[Caller, float]:
        keys: dict[str | None, Any] = self._keys.current()
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = keys.get(kid) if kid in keys else keys.get(None)
            if key is None:
                raise UnauthenticatedError("unknown_key", "token signed by an unknown key")
            claims = jwt.decode(
                token,
                key,
                algorithms=_JWT_ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("expired", "token has expired") from None
        except jwt.InvalidAudienceError:
            raise UnauthenticatedError("audience", "token is not for this audience") from None
        except jwt.PyJWTError as exc:
            raise UnauthenticatedError("invalid", f"token rejected: {exc}") from None
        role = claims.get(self._role_claim)
        if not isinstance(role, str) or role not in ROLES:
            raise PermissionDeniedError(
                "role", f"token has no known role in claim {self._role_claim!r}"
            )
        return Caller(role, ROLES[role]), float(claims["exp"])


class Authenticator:
    """Turns the `authorization` metadata of a call into a Caller, or raises."""

    def __init__(self, *, tokens: TokenFile | None = None, jwts: JwtVerifier | None = None):
        self._tokens = tokens
        self._jwts = jwts

    @property
    def enabled(self) -> bool:
        return self._tokens is not None or self._jwts is not None

    def caller(self, authorization: str | None) -> Caller:
        if not self.enabled:
            return ANONYMOUS
        if not authorization:
            raise UnauthenticatedError(
                "missing", "no credential: send 'authorization: Bearer <token>' metadata"
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise UnauthenticatedError("malformed", "authorization must be 'Bearer <token>'")
        if self._jwts is not None:
            caller = self._jwts.caller(token)
            if caller is not None:
                return caller
        if self._tokens is not None:
            caller = self._tokens.caller(token)
            if caller is not None:
                return caller
        raise UnauthenticatedError("unknown", "credential not accepted")
