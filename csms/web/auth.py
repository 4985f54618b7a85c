"""Who may use the web interface: users, login sessions, CSRF tokens, failed-login limits.

- Users come from the configuration (``[[web.users]]``) and from the database (``csms user
  add``); a name in the configuration wins. Passwords are scrypt hashes
  (:mod:`csms.passwords`), verified in a worker thread.
- A login creates a server-side session: the cookie holds a random value, the database
  only its SHA-256 digest (a copy of the database opens no session), with a CSRF token,
  an absolute expiry and an idle timeout. Sessions survive a restart; logging out deletes
  the session; removing a user ends its sessions.
- Failed logins are counted per user name and per client address: after
  ``login_max_failures`` failures within ``login_lockout_minutes``, that name or address
  is refused for ``login_lockout_minutes`` (in memory: a restart forgives).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from ..clock import Clock
from ..config import WebSettings
from ..passwords import hash_password, verify_password
from ..store import JobDb, Store
from ..timeparse import from_db, to_db

SESSION_COOKIE = "csms_session"
LOGIN_COOKIE = "csms_login"  # double-submit CSRF token of the login form
LANG_COOKIE = "csms_lang"
ROLES = ("admin", "viewer")
LAST_SEEN_WRITE_SECONDS = 60.0


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


@dataclass(slots=True)
class WebSession:
    id: str  # digest of the cookie value
    user: str
    role: str
    csrf: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Proxies:
    """Which peers are trusted reverse proxies, and what that makes of a request."""

    def __init__(self, trusted: list[str]) -> None:
        self._nets = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def trusted(self, address: str | None) -> bool:
        if not address or not self._nets:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._nets)

    def is_https(self, request: web.Request) -> bool:
        if request.secure:
            return True
        if self.trusted(request.remote):
            proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
            return proto == "https"
        return False

    def client_address(self, request: web.Request) -> str:
        """The client's address: behind trusted proxies, the nearest untrusted hop of
        X-Forwarded-For; otherwise the peer itself."""
        remote = request.remote or "unknown"
        if not self.trusted(remote):
            return remote
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        for hop in reversed([h for h in hops if h]):
            if not self.trusted(hop):
                return hop
        return remote


class LoginLimiter:
    """Failed logins per key (a user name, an address); a key is locked once it has
    ``max_failures`` failures within ``window`` and stays locked for ``window``."""

    MAX_KEYS = 20_000

    def __init__(self, max_failures: int, window: timedelta, clock: Clock) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[datetime]] = {}
        self._locked: dict[str, datetime] = {}

    def locked_until(self, *keys: str) -> datetime | None:
        now = self.clock.now()
        until = [self._locked[k] for k in keys if k in self._locked and self._locked[k] > now]
        return max(until) if until else None

    def failed(self, *keys: str) -> datetime | None:
        """Count a failure for each key; return until when one of them is now locked."""
        now = self.clock.now()
        self._prune(now)
        for key in keys:
            times = self._failures.setdefault(key, deque(maxlen=self.max_failures))
            times.append(now)
            if len(times) >= self.max_failures and now - times[0] <= self.window:
                self._locked[key] = now + self.window
                times.clear()
        return self.locked_until(*keys)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def _prune(self, now: datetime) -> None:
        if len(self._failures) + len(self._locked) < self.MAX_KEYS:
            return
        self._locked = {k: t for k, t in self._locked.items() if t > now}
        self._failures = {
            k: v for k, v in self._failures.items() if v and now - v[-1] <= self.window
        }
        while len(self._failures) >= self.MAX_KEYS:  # still full: forget the oldest
            del self._failures[next(iter(self._failures))]


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    ok: bool
    user: str | None = None
    role: str | None = None
    locked_until: datetime | None = None


class Auth:
    def __init__(self, settings: WebSettings, store: Store, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.config_users = {u.name: u for u in settings.users}
        self.proxies = Proxies(settings.trusted_proxies)
        self.limiter = LoginLimiter(
            settings.login_max_failures,
            timedelta(minutes=settings.login_lockout_minutes),
            clock,
        )
        self.session_lifetime = timedelta(hours=settings.session_hours)
        self.idle_timeout = timedelta(minutes=settings.session_idle_minutes)
        self._dummy_hash: str | None = None

    # ------------------------------------------------------------------ users

    async def find_user(self, name: str) -> tuple[str, str] | None:
        """(role, password hash) of a user, from the configuration or the database."""
        configured = self.config_users.get(name)
        if configured is not None:
            return configured.role, configured.password_hash
        row = await self.store.read_one(
            "SELECT role, password_hash FROM web_users WHERE name = ?", (name,)
        )
        return (row["role"], row["password_hash"]) if row else None

    async def login(self, name: str, password: str, address: str) -> LoginOutcome:
        keys = (f"user:{name.lower()}", f"addr:{address}")
        until = self.limiter.locked_until(*keys)
        if until is not None:
            return LoginOutcome(False, locked_until=until)
        found = await self.find_user(name) if name else None
        if found is None:
            # spend the same time as a real check, so that names cannot be probed
            if self._dummy_hash is None:
                self._dummy_hash = await asyncio.to_thread(hash_password, secrets.token_hex(8))
            await asyncio.to_thread(verify_password, password, self._dummy_hash)
            ok = False
        else:
            ok = await asyncio.to_thread(verify_password, password, found[1])
        if not ok:
            return LoginOutcome(False, locked_until=self.limiter.failed(*keys))
        self.limiter.succeeded(keys[0])
        assert found is not None
        return LoginOutcome(True, name, found[0])

    # ------------------------------------------------------------------ sessions

    async def create_session(self, user: str, role: str, address: str) -> tuple[str, WebSession]:
        """A new session; returns the cookie value (never stored) and the session."""
        value = secrets.token_urlsafe(32)
        now = self.clock.now()
        session = WebSession(
            digest(value),
            user,
            role,
            secrets.token_urlsafe(32),
            now,
            now,
            now + self.session_lifetime,
        )
        stale = to_db(now - self.idle_timeout)

        async def job(db: JobDb) -> None:
            await db.execute(
                "DELETE FROM web_sessions WHERE expires_at < ? OR last_seen_at < ?",
                (to_db(now), stale),
            )
            await db.execute(
                "INSERT INTO web_sessions (id, user_name, csrf_token, created_at, last_seen_at, "
                "expires_at, remote_address) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    session.id,
                    user,
                    session.csrf,
                    to_db(now),
                    to_db(now),
                    to_db(session.expires_at),
                    address,
                ),
            )

        await self.store.write(job)
        return value, session

    async def session(self, cookie_value: str | None) -> WebSession | None:
        """The live session a cookie names, or None (unknown, expired, idle, user gone)."""
        if not cookie_value or len(cookie_value) > 200:
            return None
        sid = digest(cookie_value)
        row = await self.store.read_one(
            "SELECT s.*, u.role AS db_role FROM web_sessions s "
            "LEFT JOIN web_users u ON u.name = s.user_name WHERE s.id = ?",
            (sid,),
        )
        if row is None:
            return None
        now = self.clock.now()
        configured = self.config_users.get(row["user_name"])
        role = configured.role if configured is not None else row["db_role"]
        last_seen = from_db(row["last_seen_at"])
        expires = from_db(row["expires_at"])
        assert last_seen is not None and expires is not None
        if role not in ROLES or now >= expires or now - last_seen > self.idle_timeout:
            await self.end_session(sid)
            return None
        created = from_db(row["created_at"])
        assert created is not None
        session = WebSession(
            sid, row["user_name"], role, row["csrf_token"], created, last_seen, expires
        )
        if (now - last_seen).total_seconds() >= LAST_SEEN_WRITE_SECONDS:
            session.last_seen_at = now
            await self._touch(sid, now)
        return session

    async def _touch(self, sid: str, now: datetime) -> None:
        async def job(db: JobDb) -> None:
            await db.execute(
                "UPDATE web_sessions SET last_seen_at = ? WHERE id = ?", (to_db(now), sid)
            )

        await self.store.write(job)

    async def end_session(self, sid: str) -> None:
        async def job(db: JobDb) -> None:
            await db.execute("DELETE FROM web_sessions WHERE id = ?", (sid,))

        await self.store.write(job)

    # ------------------------------------------------------------------ cookies

    def cookie_options(self, request: web.Request) -> dict[str, Any]:
        return {
            "path": "/",
            "httponly": True,
            "samesite": "Lax",
            "secure": self.proxies.is_https(request),
        }
