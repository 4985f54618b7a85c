"""Salted, slow password hashes: argon2id (argon2-cffi), and scrypt hashes of old versions.

New hashes are argon2id in the usual PHC form (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``)
with :data:`ARGON2` parameters. Hashes made before (``scrypt$<log2 n>$<r>$<p>$<salt>$<hash>``)
still verify, whatever their cost, and :func:`needs_rehash` says so: whoever checks a password
replaces such a hash with a new one once the password is known good (a web login, a station's
handshake; see :mod:`csms.guard`).

Verifying costs about 20 ms on purpose; :class:`VerifiedCache` remembers recent successful
checks in memory so that a reconnect storm of thousands of stations does not cost minutes of
CPU, and :mod:`csms.guard` limits how many checks run at once and how many guesses are made.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections import OrderedDict
from dataclasses import dataclass

import argon2
import structlog
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

log = structlog.get_logger("csms.passwords")


@dataclass(frozen=True, slots=True)
class Argon2Params:
    time_cost: int
    memory_kib: int
    parallelism: int


# OWASP's argon2id setting (19 MiB, 2 passes, 1 lane): about 20 ms on one core. Stronger
# settings cost every station's first handshake after a restart as much again (10,000
# stations re-verify then), and guessing is bounded by csms.guard instead.
ARGON2 = Argon2Params(time_cost=2, memory_kib=19 * 1024, parallelism=1)
# the largest scrypt memory (128 * r * N bytes) a stored hash may ask for: 1 GiB
_SCRYPT_MAX_MEMORY = 1 << 30


def _hasher(params: Argon2Params) -> argon2.PasswordHasher:
    return argon2.PasswordHasher(
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=32,
        salt_len=16,
        type=argon2.Type.ID,
    )


_HASHER = _hasher(ARGON2)


def hash_password(
    password: str, *, params: Argon2Params | None = None, log2_n: int | None = None
) -> str:
    """A new argon2id hash of ``password``.

    ``log2_n`` makes an scrypt hash of that cost instead, the format of earlier versions:
    for tests (cheap hashes) and to check that old hashes still verify; never in production.
    """
    if log2_n is not None:
        return _scrypt_hash(password, log2_n)
    hasher = _HASHER if params is None else _hasher(params)
    return hasher.hash(password)


def _scrypt_hash(password: str, log2_n: int, r: int = 8, p: int = 1) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=1 << log2_n,
        r=r,
        p=p,
        maxmem=_scrypt_memory(log2_n, r, p),
        dklen=32,
    )
    b64 = base64.b64encode
    return f"scrypt${log2_n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def _scrypt_memory(log2_n: int, r: int, p: int) -> int:
    """The ``maxmem`` an scrypt computation of these parameters needs (OpenSSL's rule:
    128 * r * (N + p + 2) bytes, and some slack)."""
    return 128 * r * ((1 << log2_n) + p + 2) + (1 << 20)


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (argon2id, or scrypt of any sane cost)."""
    if encoded.startswith("$argon2"):
        try:
            return _HASHER.verify(encoded, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError, ValueError):
            return False
    try:
        scheme, log2_n_text, r_text, p_text, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        log2_n, r, p = int(log2_n_text), int(r_text), int(p_text)
        if not (1 <= log2_n <= 30 and 1 <= r <= 64 and 1 <= p <= 16):
            log.error("a stored scrypt password hash has impossible parameters: refused")
            return False
        memory = _scrypt_memory(log2_n, r, p)
        if memory > _SCRYPT_MAX_MEMORY:
            log.error(
                "a stored scrypt password hash asks for more memory than allowed: refused",
                memory_mib=memory >> 20,
                limit_mib=_SCRYPT_MAX_MEMORY >> 20,
            )
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=1 << log2_n,
            r=r,
            p=p,
            maxmem=memory,
            dklen=len(expected),
        )
    except (ValueError, TypeError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(encoded: str) -> bool:
    """True for a hash that is not argon2id with today's parameters (an scrypt hash of an
    earlier version, or argon2 of other settings): replace it once the password is known."""
    if not encoded.startswith("$argon2id$"):
        return True
    try:
        return _HASHER.check_needs_rehash(encoded)
    except (InvalidHashError, ValueError):
        return True


def is_password_hash(text: str) -> bool:
    if text.startswith("$argon2id$"):
        try:
            argon2.extract_parameters(text)
        except (InvalidHashError, ValueError):
            return False
        return True
    parts = text.split("$")
    return len(parts) == 6 and parts[0] == "scrypt"


class VerifiedCache:
    """Remembers (hash, password) pairs that verified, keyed by a keyed digest of both."""

    def __init__(self, size: int = 50_000) -> None:
        self._size = size
        self._key = os.urandom(32)
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def _token(self, password: str, encoded: str) -> bytes:
        return hmac.digest(self._key, f"{encoded}\0{password}".encode(), "sha256")

    def known(self, password: str, encoded: str) -> bool:
        """Whether this pair verified recently (no hashing: cheap)."""
        token = self._token(password, encoded)
        if token in self._seen:
            self._seen.move_to_end(token)
            return True
        return False

    def remember(self, password: str, encoded: str) -> None:
        self._seen[self._token(password, encoded)] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)

    def verify(self, password: str, encoded: str) -> bool:
        if self.known(password, encoded):
            return True
        if not verify_password(password, encoded):
            return False
        self.remember(password, encoded)
        return True


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic ...`` header value, or None."""
    if not header:
        return None
    scheme, _, data = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(data.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
