"""Real-time authorization (issue 19) against the real OCPI test peer (extrawest-ocpi eMSP,
tests/ocpi_peer), with a simulated station presenting cards over OCPP.

The peer's library answers ``POST tokens/{uid}/authorize`` from its own tokens (ALLOWED when
valid, BLOCKED when not, 404 when unknown); ``POST _control/authorize`` steers other answers
(NOT_ALLOWED, slow, hostile). The bridge's cache runs on a FakeClock; the HTTP timeout is
real time (1 s here, so every wait stays short)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from charger_sim import Behaviour, Station
from csms.clock import FakeClock
from tests.conftest import Running, start_system
from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing

TIMEOUT = 1.0  # ocpi.realtime_auth_timeout in these tests
CACHE = 300  # ocpi.realtime_auth_cache
SLOW = 3.0  # a peer slower than the timeout

TOKEN = {
    "country_code": "PT",
    "party_id": "EMS",
    "uid": "CARD",
    "type": "RFID",
    "contract_id": "PT-EMS-C-00000001-X",
    "issuer": "Test eMSP",
    "valid": True,
    "whitelist": "ALWAYS",
    "last_updated": "2026-01-01T00:00:00Z",
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@contextlib.asynccontextmanager
async def cpo_system(
    tmp_path: Path, clock: FakeClock, timeout: float = TIMEOUT, cache: int = CACHE
) -> AsyncIterator[Running]:
    system, session, running = await start_system(
        tmp_path,
        clock=clock,
        ocpi={"realtime_auth_timeout": timeout, "realtime_auth_cache": cache},
    )
    try:
        yield running
    finally:
        await session.close()
        await system.stop()


@pytest.fixture
async def cpo(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Running]:
    async with cpo_system(tmp_path, clock) as running:
        yield running


@contextlib.asynccontextmanager
async def emsp(party_id: str = "EMS", role: str = "EMSP") -> AsyncIterator[EmspPeer]:
    try:
        async with EmspPeer(party_id=party_id, country_code="PT", role=role) as p:
            yield p
    except PeerVenvMissing as e:
        pytest.fail(str(e))


@pytest.fixture
async def peer() -> AsyncIterator[EmspPeer]:
    async with emsp() as p:
        yield p


async def join(
    cpo: Running,
    peer: EmspPeer,
    policy: dict[str, Any] | None = None,
    parties: list[str] | None = None,
) -> None:
    """The peer registers with us, with a token A granting its role and party (or
    ``parties``), and ``policy``."""
    grant: dict[str, Any] = dict(peer.grant)
    if parties is not None:
        grant["parties"] = parties
    if policy is not None:
        grant["policy"] = policy
    status, body = await cpo.api.post("/api/v1/ocpi/token-a", grant)
    assert status == 201, body
    result = await peer.register_with(body["versions_url"], body["token"])
    assert result["ok"], result


@contextlib.asynccontextmanager
async def station(cpo: Running, station_id: str) -> AsyncIterator[Station]:
    await cpo.define_station(station_id)
    st = Station(station_id, cpo.ocpp_url, 2, behaviour=Behaviour(auto_heartbeat=False))
    await st.connect()
    try:
        await st.boot_and_report()
        yield st
    finally:
        await st.disconnect()


async def authorize(st: Station, uid: str) -> tuple[str, float]:
    """The status csms answers the card, and how long it took (real seconds)."""
    started = time.monotonic()
    answer = await st.authorize(uid)
    return answer["idTagInfo"]["status"], time.monotonic() - started


async def asks(peer: EmspPeer, uid: str) -> list[dict[str, Any]]:
    """The authorize requests the peer received for ``uid``."""
    return [
        r
        for r in await peer.requests(method="POST", path="/authorize")
        if r["path"].endswith(f"/tokens/{uid}/authorize")
    ]


async def steer(peer: EmspPeer, rules: dict[str, Any]) -> None:
    await peer.control("POST", "authorize", rules)


async def seed(peer: EmspPeer, **token: Any) -> None:
    seeded = await peer.seed_tokens([{**TOKEN, "party_id": peer.party_id, **token}])
    assert seeded["stored"] and not seeded["rejected"], seeded


async def tag_owner(cpo: Running, transaction_id: int) -> str | None:
    status, tx = await cpo.api.get(f"/api/v1/transactions/{transaction_id}")
    assert status == 200, tx
    return tx["tag_owner"]


# ---------------------------------------------------------------------------- unknown cards


async def test_unknown_card_asked_of_the_emsp_accepted_or_refused(
    cpo: Running, peer: EmspPeer
) -> None:
    await join(cpo, peer)
    await seed(peer, uid="CARD-OK")
    await seed(peer, uid="CARD-BLOCKED", valid=False)
    await steer(
        peer,
        {
            "CARD-NOT": {"allowed": "NOT_ALLOWED"},
            "CARD-EXPIRED": {"allowed": "EXPIRED"},
            "CARD-CREDIT": {"allowed": "NO_CREDIT"},
        },
    )
    async with station(cpo, "RT1") as st:
        results = {
            uid: (await authorize(st, uid))[0]
            for uid in (
                "CARD-OK",
                "CARD-BLOCKED",
                "CARD-NOT",
                "CARD-EXPIRED",
                "CARD-CREDIT",
                "CARD-NOBODY",
            )
        }
        assert results == {
            "CARD-OK": "Accepted",  # the library: ALLOWED
            "CARD-BLOCKED": "Blocked",  # the library: BLOCKED
            "CARD-NOT": "Invalid",
            "CARD-EXPIRED": "Expired",
            "CARD-CREDIT": "Invalid",
            "CARD-NOBODY": "Invalid",  # unknown to the eMSP (404): csms's own rule
        }
        start = await st.start_transaction(1, "CARD-OK")
        assert start is not None and start["idTagInfo"]["status"] == "Accepted"
    # sessions and CDRs go to the party that answered
    assert await tag_owner(cpo, start["transactionId"]) == "PT/EMS"
    # what was sent: the station's Location and EVSEs, type RFID, our party to the eMSP's
    (request,) = (await asks(peer, "CARD-OK"))[:1]
    assert request["body"] == {"location_id": "LOC-RT1", "evse_uids": ["LOC-RT1-01", "LOC-RT1-02"]}
    assert request["query"] == "type=RFID"
    headers = request["headers"]
    assert headers["ocpi-from-country-code"] == "PT" and headers["ocpi-from-party-id"] == "CPO"
    assert headers["ocpi-to-country-code"] == "PT" and headers["ocpi-to-party-id"] == "EMS"
    assert headers["x-request-id"] != headers["x-correlation-id"]
    assert request["response"]["status"] == 200
    assert not [f for f in request["findings"] if "Base64" in f or "routing" in f]


async def test_answers_are_cached_on_the_clock_failures_are_not(
    cpo: Running, peer: EmspPeer, clock: FakeClock
) -> None:
    await join(cpo, peer)
    await seed(peer, uid="CARD-CACHED")
    await steer(peer, {"CARD-FAILS": {"http_status": 500, "raw": "oops"}})
    async with station(cpo, "RT2") as st:
        assert (await authorize(st, "CARD-CACHED"))[0] == "Accepted"
        start = await st.start_transaction(1, "CARD-CACHED")  # authorized again: cached
        assert start is not None and start["idTagInfo"]["status"] == "Accepted"
        await clock.advance(CACHE - 1)
        assert (await authorize(st, "card-cached"))[0] == "Accepted"  # CiString
        assert len(await asks(peer, "CARD-CACHED")) == 1
        await clock.advance(1)  # the cache time is over: asked again
        assert (await authorize(st, "CARD-CACHED"))[0] == "Accepted"
        assert len(await asks(peer, "CARD-CACHED")) == 2
        # a refusal is an answer (cached); an error is not
        await seed(peer, uid="CARD-CACHED", valid=False)
        assert (await authorize(st, "CARD-CACHED"))[0] == "Accepted"  # still the cached one
        await clock.advance(CACHE)
        assert (await authorize(st, "CARD-CACHED"))[0] == "Blocked"
        assert (await authorize(st, "CARD-CACHED"))[0] == "Blocked"
        assert len(await asks(peer, "CARD-CACHED")) == 3
        for _ in range(2):
            assert (await authorize(st, "CARD-FAILS"))[0] == "Invalid"
        assert len(await asks(peer, "CARD-FAILS")) == 2


async def test_cache_off(tmp_path: Path, clock: FakeClock, peer: EmspPeer) -> None:
    async with cpo_system(tmp_path, clock, cache=0) as cpo:
        await join(cpo, peer)
        await seed(peer, uid="CARD-NOCACHE")
        async with station(cpo, "RT3") as st:
            for _ in range(3):
                assert (await authorize(st, "CARD-NOCACHE"))[0] == "Accepted"
        assert len(await asks(peer, "CARD-NOCACHE")) == 3


async def test_hostile_answers_refuse_quickly_and_are_logged_once(
    cpo: Running, peer: EmspPeer, caplog: pytest.LogCaptureFixture
) -> None:
    await join(cpo, peer)
    info = {"allowed": "ALLOWED", "token": {**TOKEN, "party_id": "EMS"}}
    rules = {
        "H-HTML": {"raw": "<html>hello</html>"},
        "H-NOENV": {"envelope": {"allowed": "ALLOWED"}},
        "H-2001": {"envelope": {"data": info, "status_code": 2001, "timestamp": "x"}},
        "H-ENUM": {"allowed": "MAYBE"},
        "H-HUGE": {"huge_kb": 2048},
        "H-500": {"http_status": 500, "envelope": {"data": info, "status_code": 1000}},
        "H-OTHER": {"allowed": "ALLOWED", "token": {"party_id": "XYZ"}},  # not its party
        "H-SLOW": {"delay_s": SLOW, "allowed": "ALLOWED"},
    }
    await steer(peer, rules)
    caplog.set_level(logging.WARNING, logger="ocpi.realtime_auth")
    async with station(cpo, "RT4") as st:
        for uid in rules:
            status, took = await authorize(st, uid)
            assert status == "Invalid", uid
            assert took < TIMEOUT + 0.8, (uid, took)
        # the station still works
        await seed(peer, uid="H-FINE")
        assert (await authorize(st, "H-FINE"))[0] == "Accepted"
    for uid in rules:
        assert len(await asks(peer, uid)) == 1, uid
    failures = [r for r in caplog.records if "no usable answer" in r.getMessage()]
    assert len(failures) == len(rules), [r.getMessage() for r in failures]
    for record in failures:
        assert "PT/EMS" in record.getMessage()  # the peer is named
        assert "<html>" not in record.getMessage() and "xxxx" not in record.getMessage()


# ---------------------------------------------------------------------------- pushed tokens


async def test_pushed_tokens_by_whitelist_and_timeouts(cpo: Running, peer: EmspPeer) -> None:
    await join(cpo, peer)
    tokens = {
        "T-ALWAYS": {"whitelist": "ALWAYS"},
        "T-ALLOWED": {"whitelist": "ALLOWED"},
        "T-OFFLINE": {"whitelist": "ALLOWED_OFFLINE"},
        "T-NEVER": {"whitelist": "NEVER"},
        "T-NEVER-NO": {"whitelist": "NEVER"},
        "T-NEVER-INVALID": {"whitelist": "NEVER", "valid": False},
        "T-ALLOWED-INVALID": {"whitelist": "ALLOWED", "valid": False},
        "S-ALLOWED": {"whitelist": "ALLOWED"},
        "S-OFFLINE": {"whitelist": "ALLOWED_OFFLINE"},
        "S-NEVER": {"whitelist": "NEVER"},
        "E-ALLOWED": {"whitelist": "ALLOWED"},
        "E-NEVER": {"whitelist": "NEVER"},
    }
    for uid, extra in tokens.items():
        pushed = await peer.push_token({**TOKEN, "uid": uid, **extra})
        assert pushed["ok"], pushed
    await steer(
        peer,
        {
            "T-NEVER-NO": {"allowed": "NOT_ALLOWED"},
            "T-ALLOWED": {"allowed": "BLOCKED"},  # the eMSP's answer beats the whitelist
            **{u: {"delay_s": SLOW} for u in ("S-ALLOWED", "S-OFFLINE", "S-NEVER")},
            **{u: {"http_status": 503, "raw": "down"} for u in ("E-ALLOWED", "E-NEVER")},
        },
    )
    async with station(cpo, "RT5") as st:
        results = {}
        for uid in tokens:
            status, took = await authorize(st, uid)
            results[uid] = status
            assert took < TIMEOUT + 0.8, (uid, took)
    assert results == {
        "T-ALWAYS": "Accepted",
        "T-ALLOWED": "Blocked",
        "T-OFFLINE": "Accepted",  # the library: ALLOWED
        "T-NEVER": "Accepted",
        "T-NEVER-NO": "Invalid",
        "T-NEVER-INVALID": "Blocked",  # asked (NEVER), the library says BLOCKED
        "T-ALLOWED-INVALID": "Blocked",  # not valid: not asked
        "S-ALLOWED": "Accepted",  # the eMSP did not answer in time: allowed
        "S-OFFLINE": "Accepted",
        "S-NEVER": "Invalid",  # ... NEVER is refused
        "E-ALLOWED": "Accepted",
        "E-NEVER": "Invalid",
    }
    asked = {uid: len(await asks(peer, uid)) for uid in tokens}
    assert asked == {uid: 0 if uid in ("T-ALWAYS", "T-ALLOWED-INVALID") else 1 for uid in tokens}


async def test_realtime_off_keeps_the_whitelist(cpo: Running, peer: EmspPeer) -> None:
    """The operator turned real-time authorization off for this eMSP: as before issue 19."""
    await join(cpo, peer, {"realtime_auth": False})
    for uid, whitelist in (("W-NEVER", "NEVER"), ("W-ALLOWED", "ALLOWED")):
        assert (await peer.push_token({**TOKEN, "uid": uid, "whitelist": whitelist}))["ok"]
    await seed(peer, uid="W-UNKNOWN")
    async with station(cpo, "RT6") as st:
        assert (await authorize(st, "W-NEVER"))[0] == "Invalid"
        assert (await authorize(st, "W-ALLOWED"))[0] == "Accepted"
        assert (await authorize(st, "W-UNKNOWN"))[0] == "Invalid"
    assert await peer.requests(method="POST", path="/authorize") == []


async def test_mobie_hub_is_never_asked(cpo: Running) -> None:
    async with emsp("MOB", role="HUB") as hub:
        # MOBI.E mode for this hub, even with realtime_auth asked for: whitelist-only
        await join(cpo, hub, {"mobie": True, "realtime_auth": True})
        for uid, whitelist in (
            ("M-NEVER", "NEVER"),
            ("M-OFFLINE", "ALLOWED_OFFLINE"),
            ("M-ALLOWED", "ALLOWED"),
            ("M-ALWAYS", "ALWAYS"),
        ):
            pushed = await hub.push_token(
                {**TOKEN, "party_id": "CEM", "uid": uid, "whitelist": whitelist}
            )
            assert pushed["ok"], pushed
        await steer(hub, {"M-UNKNOWN": {"allowed": "ALLOWED"}})
        async with station(cpo, "RT7") as st:
            results = {
                uid: (await authorize(st, uid))[0]
                for uid in ("M-NEVER", "M-OFFLINE", "M-ALLOWED", "M-ALWAYS", "M-UNKNOWN")
            }
            start = await st.start_transaction(1, "M-ALLOWED")
            assert start is not None
        assert results == {
            "M-NEVER": "Invalid",
            "M-OFFLINE": "Invalid",
            "M-ALLOWED": "Accepted",
            "M-ALWAYS": "Accepted",
            "M-UNKNOWN": "Invalid",
        }
        assert await hub.requests(method="POST", path="/authorize") == []
        assert await tag_owner(cpo, start["transactionId"]) == "PT/CEM"


async def test_a_hub_that_is_not_mobie_is_asked_for_the_parties_behind_it(
    cpo: Running,
) -> None:
    async with emsp("HUB", role="HUB") as hub:
        # (a hub that is not MOBI.E speaks for the parties it was granted)
        await join(
            cpo, hub, {"mobie": False, "realtime_auth": True}, ["PT/HUB", "PT/CEM", "PT/XEM"]
        )
        pushed = await hub.push_token(
            {**TOKEN, "party_id": "CEM", "uid": "H-NEVER", "whitelist": "NEVER"}
        )
        assert pushed["ok"], pushed
        await steer(
            hub,
            {
                "H-CARD": {"allowed": "ALLOWED", "token": {"party_id": "XEM"}},
                "H-FOREIGN": {"allowed": "ALLOWED", "token": {"party_id": "ZZZ"}},
            },
        )
        async with station(cpo, "RT10") as st:
            assert (await authorize(st, "H-NEVER"))[0] == "Accepted"  # the library: ALLOWED
            assert (await authorize(st, "H-FOREIGN"))[0] == "Invalid"  # not a party of its
            assert (await authorize(st, "H-CARD"))[0] == "Accepted"
            start = await st.start_transaction(1, "H-CARD")
            assert start is not None
        # the card's eMSP behind the hub owns the session
        assert await tag_owner(cpo, start["transactionId"]) == "PT/XEM"
        # the token's eMSP addressed through the hub; an unknown card: the hub itself
        (request,) = await asks(hub, "H-NEVER")
        assert request["headers"]["ocpi-to-party-id"] == "CEM"
        (request,) = await asks(hub, "H-CARD")
        assert request["headers"]["ocpi-to-party-id"] == "HUB"


# ---------------------------------------------------------------------------- several eMSPs


async def test_two_emsps_first_allowed_wins_without_waiting(
    tmp_path: Path, clock: FakeClock
) -> None:
    # a longer timeout here (3 s): the card must be accepted long before it
    async with (
        cpo_system(tmp_path, clock, timeout=3) as cpo,
        emsp("EMA") as slow,
        emsp("EMB") as good,
        emsp("MOB", role="HUB") as hub,
    ):
        await join(cpo, slow)
        await join(cpo, good)
        await join(cpo, hub)  # MOBI.E (mobie_mode): never asked
        await steer(slow, {"DUO-1": {"delay_s": 3.5, "allowed": "NOT_ALLOWED"}})
        await steer(good, {"DUO-1": {"allowed": "ALLOWED", "authorization_reference": "REF-B"}})
        await steer(slow, {"DUO-2": {"http_status": 500}})
        await seed(good, uid="DUO-2")
        await steer(hub, {"DUO-1": {"allowed": "ALLOWED"}, "DUO-2": {"allowed": "ALLOWED"}})
        async with station(cpo, "RT8") as st:
            status, took = await authorize(st, "DUO-1")
            assert status == "Accepted" and took < 1.5, took
            start = await st.start_transaction(1, "DUO-1")  # the cached ALLOWED: at once
            assert start is not None and start["idTagInfo"]["status"] == "Accepted"
            status, took = await authorize(st, "DUO-2")
            assert status == "Accepted" and took < 1.5, took
        # the sessions go to the eMSP that allowed the card
        assert await tag_owner(cpo, start["transactionId"]) == "PT/EMB"
        for p in (slow, good):
            (request,) = await asks(p, "DUO-1")
            assert request["body"]["location_id"] == "LOC-RT8"
            assert request["headers"]["ocpi-to-party-id"] == p.party_id
        assert await hub.requests(method="POST", path="/authorize") == []


# ---------------------------------------------------------------------------- OCPI 2.1.1


async def test_a_211_emsp_is_asked_in_211(cpo: Running) -> None:
    """2.1.1's LocationReferences (with connector_ids), its plain token, no routing headers."""
    try:
        async with EmspPeer(party_id="OLD", country_code="PT", versions=("2.1.1",)) as old:
            await join(cpo, old)
            await steer(old, {"OLD-1": {"allowed": "ALLOWED"}})
            async with station(cpo, "RT9") as st:
                assert (await authorize(st, "OLD-1"))[0] == "Accepted"
            (request,) = await asks(old, "OLD-1")
            assert request["body"] == {
                "location_id": "LOC-RT9",
                "evse_uids": ["LOC-RT9-01", "LOC-RT9-02"],
                "connector_ids": ["1"],
            }
            assert "ocpi-from-party-id" not in request["headers"]
            assert (
                request["headers"]["authorization"]
                == "Token " + (await old.state())["current"]["token_in"]
            )
    except PeerVenvMissing as e:
        pytest.fail(str(e))
