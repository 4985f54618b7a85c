"""Passwords and guessing (issue 12, items 5, 6, 20 and 21), over real HTTP and websockets.

- 5: concurrent web login guesses cannot check more passwords than the limit, and a lock
  refuses every login alike, whatever the password;
- 6: guessing the API's or a station's password is limited per identity and per address,
  with backoff, refused without hashing, and hash checks run a bounded number at a time;
- 20: ``ocpp.require_password``, and the station page's warning;
- 21: argon2id hashes, old scrypt hashes verify (whatever their cost) and are renewed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import csms.passwords as passwords_module
from csms.clock import FakeClock
from csms.passwords import hash_password, needs_rehash, verify_password
from csms.store import JobDb
from tests import dbs
from tests.conftest import ADMIN_PASSWORD, start_system, station_body
from tests.raw_client import RawClient
from tests.test_web import ADMIN, VIEWER, WebClient, logged_in, web_overrides

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Checks:
    """Counts password checks (and how many run at once), optionally slowing each down."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()
        self._real = verify_password

    def __call__(self, password: str, encoded: str) -> bool:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if self.delay:
                time.sleep(self.delay)
            return self._real(password, encoded)
        finally:
            with self._lock:
                self.running -= 1


def _patch_checks(monkeypatch: pytest.MonkeyPatch, checks: Checks) -> None:
    monkeypatch.setattr(passwords_module, "verify_password", checks)
    # where the code before this change looked it up
    monkeypatch.setattr("csms.web.auth.verify_password", checks, raising=False)


def _session(local: str = "127.0.0.1") -> aiohttp.ClientSession:
    """A client from one loopback address (all of 127.0.0.0/8 is this machine)."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True, local_addr=(local, 0))
    return aiohttp.ClientSession(connector=connector)


# ---------------------------------------------------------------------- item 5: web login race


async def test_concurrent_login_guesses_check_at_most_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = Checks(delay=0.2)  # a check takes a while, as a real one under load does
    _patch_checks(monkeypatch, checks)
    clock = FakeClock(T0)
    system, session, running = await start_system(tmp_path, clock=clock, **web_overrides())
    form = WebClient(running.http_url)
    try:
        await form.get("/login")  # one login form: its CSRF cookie and token
        token = form.csrf
        headers = {"Cookie": f"csms_login={token}"}

        async def guess(password: str, source: str) -> tuple[int, str]:
            data = {"csrf": token, "username": VIEWER[0], "password": password, "next": "/"}
            async with _session(source) as http:
                async with http.post(
                    running.http_url + "/login",
                    data=data,
                    headers=headers,
                    allow_redirects=False,
                ) as r:
                    return r.status, await r.text()

        first_answer = asyncio.Event()

        async def wrong(n: int) -> tuple[int, str]:
            answer = await guess(f"wrong-guess-{n}", f"127.0.2.{n + 1}")
            first_answer.set()
            return answer

        # 99 truly concurrent wrong guesses, each on its own connection from its own address
        # (so that only the user name's limit applies, and no connection cap per address)
        burst = [asyncio.create_task(wrong(n)) for n in range(99)]
        await asyncio.wait_for(first_answer.wait(), 30)
        # the right password, while guesses are in flight: refused like them
        right_status, right_page = await guess(VIEWER[1], "127.0.3.1")
        answers = await asyncio.gather(*burst)
        statuses = [s for s, _ in answers]
        assert right_status == 429, right_status
        assert 303 not in statuses
        assert checks.calls <= 5, f"{checks.calls} passwords checked against a limit of 5"
        assert statuses.count(401) <= 4 and statuses.count(429) >= 95, sorted(statuses)
        # every refusal is the same page, whatever the password
        assert {page for s, page in answers if s == 429} == {right_page}
        assert "Demasiadas tentativas" in right_page
        # and once locked, the right password is still refused, with the same answer
        assert await guess(VIEWER[1], "127.0.3.2") == (429, right_page)
        calls = checks.calls
        await clock.advance(15 * 60 + 1)
        assert (await form.login(VIEWER)).status == 303
        assert checks.calls == calls + 1
    finally:
        await form.close()
        await session.close()
        await system.stop()


# ---------------------------------------------------------------------- item 6: API and OCPP


async def test_api_password_guessing_is_limited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = Checks()
    _patch_checks(monkeypatch, checks)
    hashed: list[str] = []
    real_hash = passwords_module.hash_password

    def counting_hash(password: str, **kw: Any) -> str:
        hashed.append(password)
        return real_hash(password, **kw)

    monkeypatch.setattr(passwords_module, "hash_password", counting_hash)
    system, session, running = await start_system(tmp_path)
    url = running.http_url + "/api/v1/stations"
    try:
        # the operator's client proves the password from its usual address
        async with _session("127.0.0.1") as own:
            for _ in range(3):
                async with own.get(url, headers=_basic("admin", ADMIN_PASSWORD)) as r:
                    assert r.status == 200
        # its (old, scrypt) hash is checked once, and never hashed anew: it cannot be stored
        assert checks.calls == 1 and hashed == []
        # an attacker elsewhere guesses: 5 are checked, then refused at once
        statuses, retry_after = [], []
        async with _session("127.0.0.2") as attacker:
            for n in range(30):
                async with attacker.get(url, headers=_basic("admin", f"guess-{n}")) as r:
                    statuses.append(r.status)
                    retry_after.append(r.headers.get("Retry-After"))
                    body = await r.json()
            assert statuses[:5] == [401] * 5, statuses
            assert set(statuses[5:]) == {429}, statuses
            assert body["error"] == "too_many_attempts"
            assert all(int(v) >= 1 for v in retry_after[5:] if v)
            assert checks.calls == 1 + 5  # the operator's check and the attacker's five
            # the right password from the attacker's address: refused alike, without a check
            calls = checks.calls
            async with attacker.get(url, headers=_basic("admin", ADMIN_PASSWORD)) as r:
                assert r.status == 429
            assert checks.calls == calls
        # a new address with the right password: the name is locked for it too
        async with _session("127.0.0.3") as other:
            async with other.get(url, headers=_basic("admin", ADMIN_PASSWORD)) as r:
                assert r.status == 429
        # ... but not for the client that proved it from its usual address
        async with _session("127.0.0.1") as own:
            async with own.get(url, headers=_basic("admin", ADMIN_PASSWORD)) as r:
                assert r.status == 200
        # one address spraying user names is limited by its address
        statuses = []
        async with _session("127.0.0.4") as sprayer:
            for n in range(40):
                async with sprayer.get(url, headers=_basic(f"user{n}", "guess")) as r:
                    statuses.append(r.status)
        assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}, statuses
    finally:
        await session.close()
        await system.stop()


async def _handshake_status(url: str, local: str, **kw: Any) -> int:
    try:
        async with connect(
            url, subprotocols=["ocpp1.6"], open_timeout=5, local_addr=(local, 0), **kw
        ):
            return 101
    except InvalidStatus as e:
        return e.response.status_code


async def test_station_password_guessing_is_limited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = Checks()
    _patch_checks(monkeypatch, checks)
    system, session, running = await start_system(tmp_path)
    try:
        await running.define_station("GUARDED", password="the-right-password")
        url = f"{running.ocpp_url}/GUARDED"
        right = _basic("GUARDED", "the-right-password")
        # the real station connects from its address (and is known there from now on)
        assert await _handshake_status(url, "127.0.0.1", additional_headers=right) == 101
        calls = checks.calls
        statuses = [
            await _handshake_status(
                url, "127.0.0.2", additional_headers=_basic("GUARDED", f"guess-{n}")
            )
            for n in range(12)
        ]
        assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}, statuses
        assert checks.calls - calls == 5
        # the right password from the guessing address: the same refusal, no hash computed
        assert await _handshake_status(url, "127.0.0.2", additional_headers=right) == 429
        assert await _handshake_status(url, "127.0.0.3", additional_headers=right) == 429
        assert checks.calls - calls == 5
        # the real station still connects from its own address
        assert await _handshake_status(url, "127.0.0.1", additional_headers=right) == 101
        _, body = await running.api.get("/metrics")
        assert 'csms_ocpp_handshakes_refused_total{reason="locked_out"}' in str(body)
    finally:
        await session.close()
        await system.stop()


async def test_password_checks_run_a_bounded_number_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csms.guard as guard

    system, session, running = await start_system(tmp_path)
    try:
        ids = [f"CAP-{n:02d}" for n in range(24)]
        for sid in ids:
            await running.define_station(sid, 1, password=f"password-of-{sid}")
        checks = Checks(delay=0.05)
        _patch_checks(monkeypatch, checks)

        async def attempt(n: int, sid: str, password: str) -> int:
            # distinct stations and addresses: no guessing limit applies, only the cap
            return await _handshake_status(
                f"{running.ocpp_url}/{sid}",
                f"127.0.1.{n + 1}",
                additional_headers=_basic(sid, password),
            )

        statuses = await asyncio.gather(
            *(attempt(n, sid, f"password-of-{sid}") for n, sid in enumerate(ids))
        )
        assert set(statuses) == {101}
        assert checks.calls >= len(ids)
        assert checks.most <= guard.PASSWORD_CHECKS, checks.most
        # too many waiting: refused as busy at once (503), to be retried
        monkeypatch.setattr(guard, "PASSWORD_CHECKS_WAITING", 2)
        statuses = await asyncio.gather(
            *(attempt(n + 100, sid, "a-wrong-password") for n, sid in enumerate(ids))
        )
        assert 503 in statuses and set(statuses) <= {401, 503}, statuses
    finally:
        await session.close()
        await system.stop()


async def test_backoff_doubles_and_is_forgotten() -> None:
    from csms.guard import Guard, Policy

    clock = FakeClock(T0)
    policy = Policy(3, timedelta(seconds=1), timedelta(seconds=8), timedelta(minutes=15))
    guard = Guard("test", clock, identity=policy, address=policy)
    encoded = hash_password("secret-password", log2_n=4)
    for _ in range(2):
        assert (await guard.check("st", "10.0.0.1", "bad", encoded)).outcome == "wrong"
    third = await guard.check("st", "10.0.0.1", "bad", encoded)
    assert third.outcome == "wrong" and third.until == T0 + timedelta(seconds=1)
    locks = []
    for _ in range(5):
        verdict = await guard.check("st", "10.0.0.1", "secret-password", encoded)
        assert verdict.outcome == "locked"  # refused whatever the password
        await clock.set(verdict.until)  # the lock ends: one more try
        failed = await guard.check("st", "10.0.0.1", "bad", encoded)
        locks.append((failed.until - clock.now()).total_seconds())
    assert locks == [2, 4, 8, 8, 8]
    await clock.advance(16 * 60)  # quiet long enough: forgotten
    assert (await guard.check("st", "10.0.0.1", "secret-password", encoded)).ok


# ---------------------------------------------------------------------- item 20


async def test_require_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a station defined without a password before the setting was turned on
    system, session, running = await start_system(tmp_path, **web_overrides())
    try:
        await running.define_station("OPEN-1")
        await running.define_station("SHUT-1", password="a-good-password")
        admin = await logged_in(running_client(running), ADMIN)
        _, page = await admin.get("/stations/OPEN-1")
        assert 'id="no-password"' in page and "não tem palavra-passe" in page
        _, page = await admin.get("/stations/SHUT-1")
        assert 'id="no-password"' not in page
        # without require_password, a station without one connects (and can be displaced)
        client = await RawClient.open(f"{running.ocpp_url}/OPEN-1")
        await client.close()
        await admin.close()
    finally:
        await session.close()
        await system.stop()

    system, session, running = await start_system(
        tmp_path, ocpp__require_password="true", **web_overrides()
    )
    try:
        assert await _handshake_status(f"{running.ocpp_url}/OPEN-1", "127.0.0.1") == 401
        assert "require_password" in caplog.text
        right = _basic("SHUT-1", "a-good-password")
        assert (
            await _handshake_status(
                f"{running.ocpp_url}/SHUT-1", "127.0.0.1", additional_headers=right
            )
            == 101
        )
        # the API refuses a definition that leaves a station without a password
        status, body = await running.api.put("/api/v1/stations/NEW-1", station_body("NEW-1", 1))
        assert status == 422 and body["error"] == "password_required", body
        assert "require_password" in body["message"]
        status, body = await running.api.put(
            "/api/v1/stations/SHUT-1", station_body("SHUT-1", 1, password=None)
        )
        assert status == 422, body
        status, _ = await running.api.put("/api/v1/stations/SHUT-1", station_body("SHUT-1", 1))
        assert status == 200  # keeps its password
        status, _ = await running.api.put(
            "/api/v1/stations/NEW-1", station_body("NEW-1", 1, password="another-password")
        )
        assert status == 201
        # and so does the web form
        admin = await logged_in(running_client(running), ADMIN)
        status, page, _ = await admin.post(
            "/new-station",
            {"station_id": "NEW-2", "definition": json.dumps(station_body("NEW-2", 1))},
        )
        assert status == 422 and "require_password" in page
        await admin.close()
    finally:
        await session.close()
        await system.stop()


def running_client(running: Any) -> Callable[[], WebClient]:
    return lambda: WebClient(running.http_url)


# ---------------------------------------------------------------------- item 21


def test_argon2id_hashes_and_old_scrypt_hashes() -> None:
    new = hash_password("correct horse")
    assert new.startswith("$argon2id$")
    assert verify_password("correct horse", new) and not verify_password("wrong", new)
    assert not needs_rehash(new)
    old = hash_password("correct horse", log2_n=10)  # the format of earlier versions
    assert old.startswith("scrypt$") and verify_password("correct horse", old)
    assert needs_rehash(old)
    # a stronger scrypt setting (N = 2^17, 128 MiB) verifies instead of failing silently
    salt = os.urandom(16)
    digest = hashlib.scrypt(b"correct horse", salt=salt, n=1 << 17, r=8, p=1, maxmem=1 << 28)
    b64 = base64.b64encode
    strong = f"scrypt$17$8$1${b64(salt).decode()}${b64(digest).decode()}"
    assert verify_password("correct horse", strong)
    assert not verify_password("wrong", strong)
    assert not verify_password("x", "scrypt$40$8$1$AAAA$AAAA")  # absurd cost: refused


async def test_old_hashes_are_renewed_at_login_and_handshake(tmp_path: Path) -> None:
    system, session, running = await start_system(tmp_path, **web_overrides())
    store = system.store
    try:
        old_user = hash_password("db-user-password", log2_n=10)
        await running.define_station("OLD-1", password="station-password")
        old_station = hash_password("station-password", log2_n=10)

        async def job(db: JobDb) -> None:
            await db.execute(
                "INSERT INTO web_users (name, role, password_hash, created_at, updated_at) "
                "VALUES ('ana', 'viewer', ?, '2026-01-01', '2026-01-01')",
                (old_user,),
            )
            await db.execute(
                "UPDATE stations SET password_hash = ? WHERE id = 'OLD-1'", (old_station,)
            )

        await store.write(job)
        c = WebClient(running.http_url)
        assert (await c.login(("ana", "db-user-password"))).status == 303
        await c.close()
        row = await store.read_one("SELECT password_hash FROM web_users WHERE name = 'ana'")
        assert row is not None and row["password_hash"].startswith("$argon2id$")
        c = WebClient(running.http_url)
        assert (await c.login(("ana", "db-user-password"))).status == 303
        await c.close()

        right = _basic("OLD-1", "station-password")
        url = f"{running.ocpp_url}/OLD-1"
        assert await _handshake_status(url, "127.0.0.1", additional_headers=right) == 101
        row = await store.read_one("SELECT password_hash FROM stations WHERE id = 'OLD-1'")
        assert row is not None and row["password_hash"].startswith("$argon2id$")
        assert verify_password("station-password", row["password_hash"])
        assert await _handshake_status(url, "127.0.0.1", additional_headers=right) == 101
    finally:
        await session.close()
        await system.stop()


def test_cli_makes_argon2id_hashes(tmp_path: Path) -> None:
    config = tmp_path / "csms.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CSMS_ADMIN_PASSWORD"}
    added = subprocess.run(
        [sys.executable, "-m", "csms.cli", "user", "add", "rui", "--role", "viewer",
         "--config", str(config), "--password-stdin"],
        input="a-long-password\n", capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr

    async def stored_hash() -> tuple[str]:
        async with dbs.database_at(tmp_path / "data" / "csms.sqlite3").connect() as db:
            return await db.fetchone("SELECT password_hash FROM web_users WHERE name = 'rui'")

    (encoded,) = asyncio.run(stored_hash())
    assert encoded.startswith("$argon2id$") and verify_password("a-long-password", encoded)
    made = subprocess.run(
        [sys.executable, "-m", "csms.cli", "hash-password", "--stdin"],
        input="a-long-password\n", capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("$argon2id$")
