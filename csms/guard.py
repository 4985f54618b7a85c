"""Password guessing: one mechanism for the web login, the operator API and the OCPP handshake.

Each of the three has a :class:`Guard`. A password check goes through it:

1. **Reserve an attempt** for the identity (a web user name, the API user, a charge point id)
   and for the source address, *before* anything else. A key whose failures plus attempts
   still in flight have reached its policy's ``free`` count, or that is locked, refuses the
   attempt at once: no hash is computed, and the answer is the same whatever the password
   (so 100 concurrent guesses check at most ``free`` passwords, never 80).
2. **Check the hash** in a worker thread, at most :data:`PASSWORD_CHECKS` at a time for the
   whole process; when too many wait already, the attempt is refused as *busy* (503), so
   that guessing cannot starve the server. A (hash, password) pair that verified recently is
   known without hashing (:class:`csms.passwords.VerifiedCache`).
3. **Count the outcome.** A failure counts for both keys; once a key has ``free`` failures,
   each further one locks it for ``first_lock`` doubled per failure up to ``max_lock``
   (backoff). Failures are forgotten after ``forget`` without one. A success clears the
   identity's failures (not the address's), and makes the (identity, address) pair *known*
   for :data:`KNOWN_PAIR_DAYS`: a locked identity does not lock out the client that proved
   it from that address, which only its address's own limit can refuse. Someone guessing a
   station's password or the API admin's therefore cannot lock the real one out of its
   usual address.
4. **Rehash** a password whose hash is old (scrypt, or argon2 of other settings), once it is
   known good: the caller stores the new hash.

State is in memory (a restart forgives) and bounded (:data:`MAX_KEYS` keys).
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal

import structlog

from . import passwords
from .clock import Clock, SystemClock

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Response

    from .handlers import Services
    from .store import JobDb, Store

log = structlog.get_logger("csms.guard")

# hash checks running at once in the whole process: half the cores, at least one (about 20 ms
# each), so that the event loop always keeps a core
PASSWORD_CHECKS = max(1, min(4, (os.cpu_count() or 2) // 2))
# checks allowed to wait for a free slot; more are refused as busy (503, retry in a second)
PASSWORD_CHECKS_WAITING = 256
MAX_KEYS = 20_000
KNOWN_PAIR_DAYS = 7


@dataclass(frozen=True, slots=True)
class Policy:
    """How many failures a key is allowed, and how long it is locked after more."""

    free: int
    first_lock: timedelta
    max_lock: timedelta
    forget: timedelta

    def lock_for(self, failures: int) -> timedelta:
        over = max(0, failures - self.free)
        seconds = self.first_lock.total_seconds() * 2 ** min(over, 40)
        return min(self.max_lock, timedelta(seconds=seconds))


# the operator API's user and a station's id; the web login uses its own settings
IDENTITY_POLICY = Policy(5, timedelta(seconds=1), timedelta(minutes=5), timedelta(minutes=15))
# a source address: more, since stations behind one NAT share it
ADDRESS_POLICY = Policy(20, timedelta(seconds=1), timedelta(minutes=5), timedelta(minutes=15))


@dataclass(slots=True)
class _Record:
    failures: int = 0
    last_failure: datetime | None = None
    locked_until: datetime | None = None
    in_flight: int = 0


class Limiter:
    """Attempts, failures and lockouts per key (see the module's description)."""

    def __init__(self, clock: Clock, max_keys: int = MAX_KEYS) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._records: dict[str, _Record] = {}

    def _record(self, key: str, policy: Policy, now: datetime) -> _Record | None:
        rec = self._records.get(key)
        if rec is None:
            return None
        if rec.locked_until is not None and rec.locked_until <= now:
            rec.locked_until = None
        if (
            rec.locked_until is None
            and rec.last_failure is not None
            and now - rec.last_failure > policy.forget
        ):
            rec.failures, rec.last_failure = 0, None
        return rec

    def refused_until(self, keys: Iterable[tuple[str, Policy]]) -> datetime | None:
        """Until when an attempt on these keys is refused now (None: it may be made)."""
        now = self.clock.now()
        until: datetime | None = None
        for key, policy in keys:
            rec = self._record(key, policy, now)
            if rec is None:
                continue
            if rec.locked_until is not None:
                blocked = rec.locked_until
            elif rec.in_flight and rec.failures + rec.in_flight >= policy.free:
                # the attempts in flight may use up what is left: wait for them
                blocked = now + policy.lock_for(max(policy.free, rec.failures + 1))
            else:
                continue
            until = blocked if until is None else max(until, blocked)
        return until

    def reserve(self, keys: list[tuple[str, Policy]]) -> datetime | None:
        """Reserve an attempt on every key, or return until when it is refused."""
        until = self.refused_until(keys)
        if until is not None:
            return until
        self._prune()
        for key, _ in keys:
            self._records.setdefault(key, _Record()).in_flight += 1
        return None

    def failed(self, keys: list[tuple[str, Policy]]) -> datetime | None:
        """End a reserved attempt as a failure; return until when a key is now locked."""
        now = self.clock.now()
        until: datetime | None = None
        for key, policy in keys:
            rec = self._record(key, policy, now) or self._records.setdefault(key, _Record())
            rec.in_flight = max(0, rec.in_flight - 1)
            rec.failures += 1
            rec.last_failure = now
            if rec.failures >= policy.free:
                rec.locked_until = now + policy.lock_for(rec.failures)
                until = rec.locked_until if until is None else max(until, rec.locked_until)
        return until

    def succeeded(self, keys: list[tuple[str, Policy]], clear: Iterable[str]) -> None:
        """End a reserved attempt as a success; forget the failures of the keys ``clear``."""
        for key, _ in keys:
            rec = self._records.get(key)
            if rec is not None:
                rec.in_flight = max(0, rec.in_flight - 1)
        for key in clear:
            rec = self._records.get(key)
            if rec is not None:
                rec.failures, rec.last_failure, rec.locked_until = 0, None, None

    def _prune(self) -> None:
        if len(self._records) < self.max_keys:
            return
        now = self.clock.now()
        self._records = {
            k: r
            for k, r in self._records.items()
            if r.in_flight or (r.locked_until is not None and r.locked_until > now)
        }
        for key in list(self._records):  # still full of lockouts: forget the oldest
            if len(self._records) < self.max_keys:
                break
            if not self._records[key].in_flight:
                del self._records[key]


# ---------------------------------------------------------------------- hash checks


class Busy(Exception):
    """Too many password checks are waiting already."""


_EXECUTOR = ThreadPoolExecutor(max_workers=PASSWORD_CHECKS, thread_name_prefix="csms-password")
_waiting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[int]] = (
    weakref.WeakKeyDictionary()
)


async def run_check(fn: Any, *args: Any) -> Any:
    """Run a hashing function on the password threads (at most :data:`PASSWORD_CHECKS` at
    once); raise :class:`Busy` when :data:`PASSWORD_CHECKS_WAITING` wait already."""
    loop = asyncio.get_running_loop()
    inside = _waiting.setdefault(loop, [0])
    if inside[0] >= PASSWORD_CHECKS + PASSWORD_CHECKS_WAITING:
        raise Busy
    inside[0] += 1
    future = _EXECUTOR.submit(fn, *args)

    def done(_: object) -> None:
        def leave() -> None:
            inside[0] -= 1

        try:
            loop.call_soon_threadsafe(leave)
        except RuntimeError:  # the loop is closed
            pass

    future.add_done_callback(done)
    return await asyncio.wrap_future(future)


# ---------------------------------------------------------------------- guard


Outcome = Literal["ok", "wrong", "locked", "busy"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a password check says. ``until``: for ``locked``, until when attempts are refused;
    for ``wrong``, set when this failure locked a key. ``new_hash``: for ``ok``, a new hash
    to store in place of the old one."""

    outcome: Outcome
    until: datetime | None = None
    retry_after: int = 0
    new_hash: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def refused(self) -> bool:
        """Refused without looking at the password: locked out, or busy."""
        return self.outcome in ("locked", "busy")

    @property
    def http_status(self) -> int:
        return {"ok": 200, "wrong": 401, "locked": 429, "busy": 503}[self.outcome]

    @property
    def code(self) -> str:
        return {"locked": "too_many_attempts", "busy": "busy"}.get(self.outcome, "unauthorized")

    @property
    def message(self) -> str:
        if self.outcome == "locked":
            return f"too many failed attempts; try again in {self.retry_after} s"
        if self.outcome == "busy":
            return "too many password checks at once; try again in a second"
        return "wrong or missing credentials"


class Guard:
    """The password checks of one surface (``"web"``, ``"api"``, ``"ocpp"``)."""

    def __init__(
        self,
        surface: str,
        clock: Clock,
        identity: Policy = IDENTITY_POLICY,
        address: Policy = ADDRESS_POLICY,
        cache_size: int = 50_000,
    ) -> None:
        self.surface = surface
        self.clock = clock
        self.identity_policy = identity
        self.address_policy = address
        self.limiter = Limiter(clock)
        self.cache = passwords.VerifiedCache(cache_size)
        self._known: OrderedDict[tuple[str, str], datetime] = OrderedDict()
        self._dummy_hash: str | None = None
        self._warned_rehash = False

    def _keys(self, identity: str, address: str | None) -> list[tuple[str, Policy]]:
        ident = identity.lower()[:255]
        keys: list[tuple[str, Policy]] = []
        if not self._is_known(ident, address):
            keys.append((f"id:{ident}", self.identity_policy))
        if address:
            keys.append((f"addr:{address}", self.address_policy))
        return keys

    def _is_known(self, identity: str, address: str | None) -> bool:
        if not address:
            return False
        at = self._known.get((identity, address))
        if at is None:
            return False
        if self.clock.now() - at > timedelta(days=KNOWN_PAIR_DAYS):
            del self._known[(identity, address)]
            return False
        return True

    def _remember(self, identity: str, address: str | None) -> None:
        if not address:
            return
        pair = (identity.lower()[:255], address)
        self._known[pair] = self.clock.now()
        self._known.move_to_end(pair)
        while len(self._known) > MAX_KEYS:
            self._known.popitem(last=False)

    def _verdict(self, outcome: Outcome, until: datetime | None = None) -> Verdict:
        retry = 1
        if until is not None:
            retry = max(1, math.ceil((until - self.clock.now()).total_seconds()))
        return Verdict(outcome, until, retry)

    def locked(self, identity: str, address: str | None) -> Verdict | None:
        """A ``locked`` verdict when an attempt would be refused now (reserves nothing)."""
        until = self.limiter.refused_until(self._keys(identity, address))
        return None if until is None else self._verdict("locked", until)

    async def check(
        self,
        identity: str,
        address: str | None,
        password: str,
        encoded: str | None,
        rehash: bool = True,
    ) -> Verdict:
        """Check ``password`` against ``encoded`` for ``identity`` from ``address``.

        ``encoded`` None (no such user): a hash is checked all the same (the same time as
        a real check, so that names cannot be probed), and it is a failure. ``rehash``: the
        caller can store a new hash (``Verdict.new_hash``) in place of an outdated one.
        """
        keys = self._keys(identity, address)
        until = self.limiter.reserve(keys)
        if until is not None:
            return self._verdict("locked", until)
        outcome: Outcome = "wrong"
        try:
            if encoded is not None and self.cache.known(password, encoded):
                outcome = "ok"
            else:
                target = encoded if encoded is not None else await self._dummy()
                if await run_check(passwords.verify_password, password, target):
                    outcome = "ok" if encoded is not None else "wrong"
        except Busy:
            outcome = "busy"
        finally:
            # a cancelled check counts as a failure: guesses cannot escape by hanging up
            if outcome == "ok":
                self.limiter.succeeded(keys, [k for k, _ in keys if k.startswith("id:")])
            elif outcome == "busy":
                self.limiter.succeeded(keys, [])
            else:
                until = self.limiter.failed(keys)
        if outcome == "busy":
            return self._verdict("busy")
        if outcome == "wrong":
            return self._verdict("wrong", until)
        assert encoded is not None
        self.cache.remember(password, encoded)
        self._remember(identity, address)
        new_hash = None
        if rehash and passwords.needs_rehash(encoded):
            try:
                new_hash = await run_check(passwords.hash_password, password)
            except Busy:
                new_hash = None  # next time
            else:
                self.cache.remember(password, new_hash)
        return Verdict("ok", new_hash=new_hash)

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await run_check(passwords.hash_password, secrets.token_hex(8))
        return self._dummy_hash

    async def check_basic(
        self,
        credentials: tuple[str, str] | None,
        user: str,
        encoded: str,
        address: str | None,
    ) -> Verdict:
        """The operator API's HTTP Basic credentials (``user`` with the hash ``encoded``).

        No credentials at all is no guess: ``wrong``, uncounted (a client's first request)."""
        if credentials is None:
            return Verdict("wrong")
        name, password = credentials
        known = name == user
        verdict = await self.check(name, address, password, encoded if known else None, False)
        if verdict.ok and not self._warned_rehash and passwords.needs_rehash(encoded):
            self._warned_rehash = True
            log.warning(
                "the API admin password hash is of an older kind (scrypt): set "
                "CSMS_ADMIN_PASSWORD, or api.admin_password_hash to one made by "
                "`csms hash-password` (argon2id); a generated data/admin-password.hash can be "
                "deleted to have a new password generated",
                user=user,
            )
        return verdict


def api_guard(clock: Clock | None = None) -> Guard:
    """The operator API's guard."""
    return Guard("api", clock or SystemClock())


# ---------------------------------------------------------------------- the OCPP handshake

_ocpp_guards: weakref.WeakKeyDictionary[Store, Guard] = weakref.WeakKeyDictionary()


def ocpp_guard(services: Services) -> Guard:
    """The OCPP handshake's guard, one per central system (kept with its store)."""
    guard = _ocpp_guards.get(services.store)
    if guard is None:
        guard = _ocpp_guards[services.store] = Guard("ocpp", services.clock)
    return guard


def remote_host(connection: ServerConnection) -> str | None:
    """The address (no port) a connection comes from, None when unknown."""
    try:
        addr: Any = connection.remote_address
    except Exception:
        return None
    if isinstance(addr, tuple) and addr:
        return str(addr[0])
    return str(addr) if addr else None


async def station_handshake(
    services: Services,
    connection: ServerConnection,
    station_id: str,
    password_hash: str | None,
    credentials: tuple[str, str] | None,
) -> Response | None:
    """Check a station's Basic credentials at the handshake (OCPP security profile 1).

    Returns the refusal to send, or None to let it in. A station without a password gets
    here only with ``ocpp.require_password``: it is refused (401)."""
    metrics = services.metrics
    address = remote_host(connection)
    if password_hash is None:
        metrics.handshakes_refused.labels("no_password").inc()
        log.warning(
            "handshake refused: the station has no password and ocpp.require_password is on "
            "(give it one: PUT /api/v1/stations/{id} with a password)",
            station_id=station_id,
            remote=address,
        )
        return _unauthorized(connection)
    if credentials is None or credentials[0] != station_id:
        verdict = Verdict("wrong")
        if credentials is not None:  # a guess under another name: counted
            verdict = await ocpp_guard(services).check(station_id, address, credentials[1], None)
    else:
        verdict = await ocpp_guard(services).check(
            station_id, address, credentials[1], password_hash
        )
    if verdict.ok:
        if verdict.new_hash is not None:
            await _store_station_hash(services.store, station_id, password_hash, verdict.new_hash)
            log.info("station password hash renewed (argon2id)", station_id=station_id)
        return None
    if verdict.refused:
        metrics.handshakes_refused.labels(
            "locked_out" if verdict.outcome == "locked" else "busy"
        ).inc()
        log.warning(
            "handshake refused: too many failed passwords"
            if verdict.outcome == "locked"
            else "handshake refused: too many password checks at once",
            station_id=station_id,
            remote=address,
            retry_after=verdict.retry_after,
        )
        status = (
            HTTPStatus.TOO_MANY_REQUESTS
            if verdict.outcome == "locked"
            else HTTPStatus.SERVICE_UNAVAILABLE
        )
        response = connection.respond(status, "Try again later\n")
        response.headers["Retry-After"] = str(verdict.retry_after)
        return response
    metrics.handshakes_refused.labels("unauthorized").inc()
    log.warning(
        "handshake refused: wrong or missing credentials",
        station_id=station_id,
        remote=address,
        credentials_sent=credentials is not None,
        locked_until=verdict.until.isoformat() if verdict.until else None,
    )
    return _unauthorized(connection)


def _unauthorized(connection: ServerConnection) -> Response:
    response = connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
    response.headers["WWW-Authenticate"] = 'Basic realm="OCPP", charset="UTF-8"'
    return response


async def _store_station_hash(store: Store, station_id: str, old: str, new: str) -> None:
    """Replace a station's password hash, unless it was changed meanwhile."""

    async def job(db: JobDb) -> None:
        await db.execute(
            "UPDATE stations SET password_hash = ? WHERE id = ? AND password_hash = ?",
            (new, station_id, old),
        )

    try:
        await store.write(job)
    except Exception:
        log.exception("could not store the station's new password hash", station_id=station_id)


# ---------------------------------------------------------------------- definitions


def station_password_refusal(
    require_password: bool, password_given: bool, keeps_password: bool, has_password: bool
) -> str | None:
    """Why a station definition must be refused under ``ocpp.require_password`` (or None).

    ``password_given``: the definition sets one; ``keeps_password``: it has no ``password``
    key (the stored one stays); ``has_password``: the station has one stored now."""
    if not require_password or password_given or (keeps_password and has_password):
        return None
    return (
        "ocpp.require_password is on: a station needs a password "
        '("password": "...", at least 8 characters)'
    )
