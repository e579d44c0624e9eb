"""Real credentials for tests: a CA, server and client certificates, JWT keys, tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from decision_engine.server.auth import hash_token
from decision_engine.server.dev_pki import DevPki, make_dev_pki


def make_pki(directory: Path, *, name: str = "test") -> DevPki:
    """A CA that signed a server certificate (localhost, 127.0.0.1) and a client one."""
    return make_dev_pki(directory, name=name)


@dataclass(frozen=True)
class JwtIssuer:
    """Signs JWTs with a private key whose public half is in `public_key`."""

    private_key: rsa.RSAPrivateKey
    public_key: Path

    def token(
        self, *, role: str | None = "desktop", audience: str = "decision-engine",
        expires_in: float = 300.0, **claims: object,
    ) -> str:  # fmt: skip
        payload: dict[str, object] = {"aud": audience, "exp": int(time.time() + expires_in)}
        if role is not None:
            payload["role"] = role
        payload.update(claims)
        return jwt.encode(payload, self.private_key, algorithm="RS256")


def make_jwt_issuer(directory: Path) -> JwtIssuer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / "jwt-public.pem"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return JwtIssuer(key, path)


def token_line(token: str, role: str, name: str = "test") -> str:
    return f"{hash_token(token)} {role} {name}\n"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
