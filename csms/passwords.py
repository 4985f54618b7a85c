"""Salted, slow password hashes (scrypt, from the standard library).

Format: ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>``. Verifying costs tens of
milliseconds on purpose; :class:`VerifiedCache` remembers recent successful checks in memory
so that a reconnect storm of thousands of stations does not cost minutes of CPU.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections import OrderedDict

_LOG2_N, _R, _P = 14, 8, 1


def hash_password(password: str, *, log2_n: int = _LOG2_N) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=1 << log2_n, r=_R, p=_P, maxmem=1 << 26, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${log2_n}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, log2_n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=1 << int(log2_n),
            r=int(r),
            p=int(p),
            maxmem=1 << 26,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def is_password_hash(text: str) -> bool:
    parts = text.split("$")
    return len(parts) == 6 and parts[0] == "scrypt"


class VerifiedCache:
    """Remembers (hash, password) pairs that verified, keyed by a keyed digest of both."""

    def __init__(self, size: int = 50_000) -> None:
        self._size = size
        self._key = os.urandom(32)
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def verify(self, password: str, encoded: str) -> bool:
        token = hmac.digest(self._key, f"{encoded}\0{password}".encode(), "sha256")
        if token in self._seen:
            self._seen.move_to_end(token)
            return True
        if not verify_password(password, encoded):
            return False
        self._seen[token] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
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
