"""Who may use the web interface: users, login sessions, CSRF tokens, failed-login limits.

- Users come from the configuration (``[[web.users]]``) and from the database (``csms user
  add``); a name in the configuration wins. Passwords are argon2id hashes
  (:mod:`csms.passwords`); an older scrypt hash of a database user is replaced at its next
  login.
- A login creates a server-side session: the cookie holds a random value, the database
  only its SHA-256 digest (a copy of the database opens no session), with a CSRF token,
  an absolute expiry and an idle timeout. Sessions survive a restart; logging out deletes
  the session; removing a user ends its sessions.
- Failed logins are counted per user name and per client address by :mod:`csms.guard`,
  attempts in flight included: after ``login_max_failures`` failures within
  ``login_lockout_minutes``, that name or address is refused for ``login_lockout_minutes``
  (in memory: a restart forgives), whatever the password.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiohttp import web

from ..clock import Clock
from ..config import WebSettings
from ..guard import Guard, Policy
from ..passwords import needs_rehash
from ..store import JobDb, Store
from ..timeparse import from_db, to_db

log = structlog.get_logger("csms.web")

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


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    ok: bool
    user: str | None = None
    role: str | None = None
    locked_until: datetime | None = None
    busy: bool = False  # too many password checks at once: try again in a moment


class Auth:
    def __init__(self, settings: WebSettings, store: Store, clock: Clock) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.config_users = {u.name: u for u in settings.users}
        self.proxies = Proxies(settings.trusted_proxies)
        lockout = timedelta(minutes=settings.login_lockout_minutes)
        policy = Policy(settings.login_max_failures, lockout, lockout, lockout)
        self.guard = Guard("web", clock, identity=policy, address=policy)
        self._warned_config_hash: set[str] = set()
        self.session_lifetime = timedelta(hours=settings.session_hours)
        self.idle_timeout = timedelta(minutes=settings.session_idle_minutes)

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
        """Check a login. The attempt is reserved before the password is checked (see
        :mod:`csms.guard`): while the name or the address is locked, or while attempts in
        flight could reach the limit, every login is refused alike, whatever the password."""
        identity = f"user:{name.lower()}"
        locked = self.guard.locked(identity, address)
        if locked is not None:
            return LoginOutcome(False, locked_until=locked.until)
        found = await self.find_user(name) if name else None
        verdict = await self.guard.check(
            identity,
            address,
            password,
            found[1] if found is not None else None,
            rehash=name not in self.config_users,  # those are changed in the configuration
        )
        if verdict.outcome == "busy":
            return LoginOutcome(False, busy=True)
        if verdict.outcome == "locked" or not verdict.ok:
            return LoginOutcome(False, locked_until=verdict.until)
        assert found is not None
        if verdict.new_hash is not None:
            await self._renew_hash(name, found[1], verdict.new_hash)
        elif name in self.config_users and name not in self._warned_config_hash:
            if needs_rehash(found[1]):
                self._warned_config_hash.add(name)
                log.warning(
                    "web user of the configuration has an older kind of password hash "
                    "(scrypt): replace its password_hash with one from `csms hash-password`",
                    user=name,
                )
        return LoginOutcome(True, name, found[0])

    async def _renew_hash(self, name: str, old: str, new: str) -> None:
        """Store a database user's password hash of today's kind in place of an older one."""

        async def job(db: JobDb) -> None:
            await db.execute(
                "UPDATE web_users SET password_hash = ? WHERE name = ? AND password_hash = ?",
                (new, name, old),
            )

        await self.store.write(job)
        log.info("web user password hash renewed (argon2id)", user=name)

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
