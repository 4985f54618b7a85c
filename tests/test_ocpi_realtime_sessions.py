"""A card accepted by real-time authorization (issue 19) gets the eMSP's token in its Session
and CDR: the CdrToken the eMSP answered (its party, type and contract_id), ``auth_method``
AUTH_REQUEST and the ``authorization_reference`` it answered; kept in ``ocpi_authorizations``
(bounded: one row per station and id tag per few seconds, pruned after 7 days).

End to end against the real OCPI test peer (tests/ocpi_peer, steered with
``_control/authorize``), plus the pure parts (parse_reply's token, the record, the match of
a record to a transaction) and the store's bounds on a FakeClock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from charger_sim import Behaviour, Station
from csms.clock import FakeClock
from csms.ports import TransactionView, to_db
from ocpi_bridge.prices import AD_HOC_OWNER
from ocpi_bridge.realtime_auth import Verdict, authorization_record, decide, parse_reply
from ocpi_bridge.sessions import realtime_authorization
from ocpi_bridge.store import OcpiStore
from ocpi_bridge.tokens import PRUNE_EVERY, RECORD_GAP, RECORDS_KEPT, OcpiTokenSource
from tests.conftest import Running, start_system
from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
EMSP_TOKEN = {
    "country_code": "PT",
    "party_id": "EMS",
    "uid": "RTS-CARD",
    "type": "RFID",
    "contract_id": "PT-EMS-C-RTS00001-X",
}

# ---------------------------------------------------------------------------- pure parts


def envelope(data: Any) -> dict[str, Any]:
    return {"data": data, "status_code": 1000, "timestamp": "2026-12-01T12:00:00Z"}


def owns_ems(cc: str, pid: str) -> bool:
    return (cc, pid) == ("PT", "EMS")


def reply(token: dict[str, Any] | None, uid: str = "RTS-CARD", **info: Any) -> Any:
    data: dict[str, Any] = {"allowed": "ALLOWED", **info}
    if token is not None:
        data["token"] = token
    return parse_reply(4, 200, envelope(data), owns_ems, "PT/EMS", uid)


def test_the_answered_token_is_kept_as_a_cdr_token() -> None:
    answered = {**EMSP_TOKEN, "country_code": "pt", "party_id": "ems", "uid": "rts-card"}
    got = reply({**answered, "valid": True, "whitelist": "ALLOWED"})
    assert got.kind == "answer"
    # party upper-case, the uid as the station read it, nothing else of the token
    assert got.token == EMSP_TOKEN | {"contract_id": "PT-EMS-C-RTS00001-X"}
    verdict = decide(None, [got], "LOC1")
    assert verdict is not None and verdict.token == got.token
    # incomplete (no contract_id) or absent: no token, the answer still counts
    for token in ({k: v for k, v in EMSP_TOKEN.items() if k != "contract_id"}, None):
        got = reply(token)
        assert got.kind == "answer" and got.token is None


@pytest.mark.parametrize(
    "bad",
    [
        {"contract_id": "C" * 37},
        {"contract_id": "C" * 100_000},
        {"contract_id": ""},
        {"contract_id": 12},
        {"contract_id": "PT-EMS\n-1"},
        {"contract_id": "ÜNICODE"},
        {"uid": "U" * 37},
        {"uid": "ANOTHER-CARD"},  # an answer about another token
        {"uid": ["RTS-CARD"]},
        {"type": "BADGE"},
        {"type": None, "uid": 5},
        {"party_id": "XYZ"},  # a party the peer does not represent
    ],
)
def test_a_hostile_token_refuses_the_answer(bad: dict[str, Any]) -> None:
    got = reply({**EMSP_TOKEN, **bad})
    assert got.kind == "failed" and got.error and got.token is None
    assert decide(None, [got], "LOC1") is None


def test_the_record_of_a_verdict() -> None:
    answered = Verdict("Accepted", "PT/EMS", None, "REF-1", 4, "allowed", dict(EMSP_TOKEN))
    record = authorization_record(answered, "rts-card", "RFID", None)
    assert record == {
        "id_tag": "RTS-CARD",
        "owner": "PT/EMS",
        **EMSP_TOKEN,
        "authorization_reference": "REF-1",
        "peer_id": 4,
    }
    # 2.1.1 (no token in the answer): the owner's party, the id tag as uid and contract_id
    bare = authorization_record(Verdict("Accepted", "PT/OLD", peer_id=5), "OLD-1", "RFID", None)
    assert bare is not None
    assert (bare["country_code"], bare["party_id"], bare["uid"], bare["contract_id"]) == (
        "PT",
        "OLD",
        "OLD-1",
        "OLD-1",
    )
    # a pushed token asked in real time: the pushed token
    pushed = {**EMSP_TOKEN, "party_id": "ems", "contract_id": "PUSHED-1", "valid": True}
    made = authorization_record(
        Verdict("Accepted", "PT/EMS", peer_id=4), "RTS-CARD", "RFID", pushed
    )
    assert made is not None and (made["party_id"], made["contract_id"]) == ("EMS", "PUSHED-1")
    # nothing kept of a refusal, nor of an acceptance without an answer (whitelist,
    # unreachable eMSP)
    for verdict in (
        Verdict("Invalid", None, None, "REF-2", 4),
        Verdict("Blocked", "PT/EMS", peer_id=4),
        Verdict("Accepted", "PT/EMS", reason="whitelisted"),
        Verdict("Accepted", None, peer_id=4),
    ):
        assert authorization_record(verdict, "RTS-CARD", "RFID", None) is None


def view(**extra: Any) -> TransactionView:
    values: dict[str, Any] = {
        "id": 7,
        "station_id": "ST1",
        "connector_id": 1,
        "id_tag": "rts-card",
        "id_tag_status": "Accepted",
        "tag_owner": "PT/EMS",
        "start_time": NOW,
        "start_received_at": NOW,
        "stop_time": None,
        "stop_received_at": None,
        "updated_at": NOW,
    }
    fields = TransactionView.__dataclass_fields__
    values.update({k: None for k in fields if k not in values})
    values.update(extra)
    return TransactionView(**values)


def row(at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "station_id": "ST1",
        "id_tag": "RTS-CARD",
        "owner": "PT/EMS",
        **EMSP_TOKEN,
        "authorization_reference": None,
        "peer_id": 4,
        "authorized_at": to_db(at),
        **extra,
    }


def test_which_record_is_the_transactions() -> None:
    tx = view()
    early = row(NOW - timedelta(minutes=9), authorization_reference="EARLY")
    late = row(NOW - timedelta(seconds=3), authorization_reference="LATE")
    assert realtime_authorization(tx, [early, late]) is late  # the newest
    assert realtime_authorization(tx, [early]) is early
    during = row(NOW + timedelta(seconds=2), authorization_reference="START")
    assert realtime_authorization(tx, [during]) is during  # the StartTransaction's own lookup
    for other in (
        row(NOW - timedelta(minutes=11)),  # too old
        row(NOW + timedelta(minutes=2)),  # after the start
        row(NOW, station_id="ST2"),
        row(NOW, id_tag="OTHER"),
        row(NOW, owner="PT/XYZ"),  # the transaction's owner is another
    ):
        assert realtime_authorization(tx, [other]) is None, other
    # no owner (csms's own tags), or ad hoc: never
    assert realtime_authorization(view(tag_owner=None), [late]) is None
    ad_hoc = AD_HOC_OWNER
    assert realtime_authorization(view(tag_owner=ad_hoc), [row(NOW, owner=ad_hoc)]) is None


# ---------------------------------------------------------------------------- store bounds


async def test_records_are_bounded(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    system, session, cpo = await start_system(tmp_path, clock=clock, ocpi={})
    try:
        store: OcpiStore = cpo.system.extensions[0].bridge.store
        record = authorization_record(
            Verdict("Accepted", "PT/EMS", None, "REF-1", 4, "", dict(EMSP_TOKEN)),
            "RTS-CARD",
            "RFID",
            None,
        )
        assert record is not None

        async def rows() -> list[dict[str, Any]]:
            return await store.store.read(
                "SELECT * FROM ocpi_authorizations ORDER BY authorized_at, id"
            )

        assert await store.record_authorization("ST1", record, RECORD_GAP)
        # the same answer again within the gap (Authorize, then StartTransaction): no write
        await clock.advance(2)
        assert not await store.record_authorization("ST1", record, RECORD_GAP)
        # another answer within the gap: the same row, changed
        changed = {**record, "authorization_reference": "REF-2"}
        assert await store.record_authorization("ST1", changed, RECORD_GAP)
        [only] = await rows()
        assert only["authorization_reference"] == "REF-2"
        assert only["authorized_at"] == to_db(NOW + timedelta(seconds=2))
        # after the gap: a new row; another station: its own row
        await clock.advance(RECORD_GAP.total_seconds())
        assert await store.record_authorization("ST1", changed, RECORD_GAP)
        assert await store.record_authorization("ST2", record, RECORD_GAP)
        assert len(await rows()) == 3
        # many presentations in a row: at most one row per gap
        for _ in range(50):
            await clock.advance(1)
            await store.record_authorization("ST1", record, RECORD_GAP)
        # (the first changes the row of 12 s ago; then one row per 10 s: at 23, 33, 43, 53 s)
        assert RECORD_GAP == timedelta(seconds=10)
        assert len(await rows()) == 3 + 4
        # pruning: rows older than the limit go, the others stay
        recent = len(await rows())
        await clock.advance(RECORDS_KEPT.total_seconds())
        assert await store.record_authorization("ST3", record, RECORD_GAP)
        assert await store.prune_authorizations(clock.now() - RECORDS_KEPT) > 0
        left = await rows()
        assert [r["station_id"] for r in left] == ["ST3"], recent
        # the read for sessions: by station, id tag (any case) and time
        found = await store.authorizations(
            {"ST3", "ST9"}, {"rts-card"}, clock.now() - timedelta(minutes=1), clock.now()
        )
        assert [r["station_id"] for r in found] == ["ST3"]
        assert await store.authorizations({"ST3"}, {"OTHER"}, NOW, clock.now()) == []
    finally:
        await session.close()
        await system.stop()


class FakeStore:
    """What OcpiTokenSource keeps records through (OcpiStore's methods), recorded."""

    def __init__(self, clock: FakeClock, fail: bool = False) -> None:
        self.clock = clock
        self.fail = fail
        self.written: list[tuple[str, dict[str, Any]]] = []
        self.pruned: list[datetime] = []

    async def record_authorization(
        self, station_id: str, record: dict[str, Any], gap: timedelta
    ) -> bool:
        if self.fail:
            raise RuntimeError("database down")
        self.written.append((station_id, record))
        return True

    async def prune_authorizations(self, before: datetime) -> int:
        self.pruned.append(before)
        return 0


async def test_the_token_source_keeps_and_prunes_on_its_clock() -> None:
    clock = FakeClock(NOW)
    store = FakeStore(clock)
    source = OcpiTokenSource(store)  # type: ignore[arg-type]
    allowed = Verdict("Accepted", "PT/EMS", None, "REF-1", 4, "", dict(EMSP_TOKEN))
    await source._remember(Verdict("Invalid", None, None, "R", 4), "RTS-NO", "ST1", None)
    assert store.written == [] and store.pruned == []  # a refusal: nothing
    await source._remember(allowed, "RTS-CARD", "ST1", None)  # Authorize
    await clock.advance(1)
    await source._remember(allowed, "rts-card", "ST1", None)  # StartTransaction: skipped
    await source._remember(allowed, "RTS-CARD", "ST2", None)  # another station
    assert [(st, r["id_tag"]) for st, r in store.written] == [
        ("ST1", "RTS-CARD"),
        ("ST2", "RTS-CARD"),
    ]
    assert store.pruned == [NOW - RECORDS_KEPT]  # pruned once, at the first write
    await clock.advance(RECORD_GAP.total_seconds())
    await source._remember(allowed, "RTS-CARD", "ST1", None)  # later: written again
    assert len(store.written) == 3 and len(store.pruned) == 1  # not pruned within the hour
    await clock.advance(PRUNE_EVERY.total_seconds())
    await source._remember(allowed, "RTS-CARD", "ST1", None)
    assert store.pruned[-1] == clock.now() - RECORDS_KEPT and len(store.pruned) == 2
    # the database failing: logged, the card is not refused (nothing raised)
    store.fail = True
    await clock.advance(RECORD_GAP.total_seconds())
    await source._remember(allowed, "RTS-CARD", "ST1", None)


# ---------------------------------------------------------------------------- end to end


@contextlib.asynccontextmanager
async def emsp(party_id: str, role: str = "EMSP") -> AsyncIterator[EmspPeer]:
    try:
        async with EmspPeer(party_id=party_id, country_code="PT", role=role) as p:
            yield p
    except PeerVenvMissing as e:
        pytest.fail(str(e))


async def join(cpo: Running, peer: EmspPeer, policy: dict[str, Any] | None = None) -> None:
    grant: dict[str, Any] = {**peer.grant, **({"policy": policy} if policy else {})}
    status, body = await cpo.api.post("/api/v1/ocpi/token-a", grant)
    assert status == 201, body
    result = await peer.register_with(body["versions_url"], body["token"])
    assert result["ok"], result


async def eventually(check: Any, timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout}s: {check.__name__}")
        await asyncio.sleep(0.1)


async def bodies(peer: EmspPeer, module: str, tx: int) -> list[dict[str, Any]]:
    """What we pushed to the peer of transaction ``tx`` (Session PUT/PATCH, CDR POST)."""
    out = []
    for r in await peer.requests():
        if r["method"] not in ("PUT", "PATCH", "POST") or f"/{module}" not in r["path"]:
            continue
        body = r["body"] if isinstance(r["body"], dict) else {}
        if module == "sessions" and r["path"].rstrip("/").endswith(f"/{tx}"):
            out.append(body)
        elif module == "cdrs" and body.get("session_id") == str(tx):
            out.append(body)
    return out


TARIFF = {
    "currency": "EUR",
    "type": "REGULAR",
    "elements": [
        {"price_components": [{"type": "ENERGY", "price": 0.30, "vat": 23, "step_size": 1}]}
    ],
}


async def define(cpo: Running, station_id: str) -> None:
    """A station whose connectors have our tariff STD (the 2.1.1 peer's library requires a
    connector's tariff_id)."""
    assert (await cpo.api.put("/api/v1/tariffs/STD", TARIFF))[0] in (200, 201)
    await cpo.define_station(station_id)
    body = (await cpo.api.get(f"/api/v1/stations/{station_id}"))[1]
    definition = {"location": body["location"], "evses": body["evses"]}
    for evse in definition["evses"]:
        for connector in evse["connectors"]:
            connector["tariff_ids"] = ["STD"]
    assert (await cpo.api.put(f"/api/v1/stations/{station_id}", definition))[0] == 200


async def charge(cpo: Running, station_id: str, tag: str) -> int:
    await define(cpo, station_id)
    st = Station(
        station_id,
        cpo.ocpp_url,
        2,
        behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.01),
    )
    await st.connect()
    try:
        await st.boot_and_report()
        answer = await st.start_charging(1, tag)  # Authorize, then StartTransaction
        assert answer is not None and answer["idTagInfo"]["status"] == "Accepted", answer
        tx = int(answer["transactionId"])
        await st.meter_values(1, tx, energy_wh=1500, power_w=7400)
        await st.stop_charging(1)
        return tx
    finally:
        await st.disconnect()


async def records(cpo: Running, id_tag: str) -> list[dict[str, Any]]:
    store: OcpiStore = cpo.system.extensions[0].bridge.store
    return await store.store.read(
        "SELECT * FROM ocpi_authorizations WHERE id_tag = ?", (id_tag.upper(),)
    )


@pytest.fixture
async def cpo(tmp_path: Path) -> AsyncIterator[Running]:
    system, session, running = await start_system(
        tmp_path,
        ocpi={"session_update_interval": 1, "push_timeout": 3, "realtime_auth_timeout": 2},
    )
    try:
        yield running
    finally:
        await session.close()
        await system.stop()


def token_of(obj: dict[str, Any]) -> tuple[str, ...]:
    t = obj["cdr_token"]
    return tuple(
        str(t[k]).upper() for k in ("country_code", "party_id", "uid", "type", "contract_id")
    )


async def test_the_emsps_answer_reaches_its_session_and_cdr(cpo: Running) -> None:
    async with emsp("EMS") as peer, emsp("MOB", role="HUB") as hub:
        await join(cpo, peer)
        await join(cpo, hub, {"mobie": True})  # MOBI.E sees every session, WHITELIST
        # an unknown card the eMSP allows (its answer's token, a reference) ...
        await peer.control(
            "POST",
            "authorize",
            {
                "RTS-CARD": {
                    "allowed": "ALLOWED",
                    "authorization_reference": "REF-42",
                    "token": {"contract_id": EMSP_TOKEN["contract_id"]},
                },
                "RTS-NO": {"allowed": "NOT_ALLOWED", "authorization_reference": "REF-NO"},
                "RTS-LONG": {"allowed": "ALLOWED", "token": {"contract_id": "C" * 5000}},
                "RTS-NEVER": {"allowed": "ALLOWED", "authorization_reference": "REF-P"},
            },
        )
        # ... and a pushed token whitelisted NEVER, asked in real time
        pushed = {
            **EMSP_TOKEN,
            "uid": "RTS-NEVER",
            "contract_id": "PT-EMS-C-PUSHED01-X",
            "issuer": "eMSP",
            "valid": True,
            "whitelist": "NEVER",
            "last_updated": "2026-01-01T00:00:00Z",
        }
        assert (await peer.push_token(pushed))["ok"]
        tx = await charge(cpo, "RTA1", "RTS-CARD")
        tx_pushed = await charge(cpo, "RTA2", "RTS-NEVER")
        st = Station("RTA3", cpo.ocpp_url, 2, behaviour=Behaviour(auto_heartbeat=False))
        await cpo.define_station("RTA3")
        await st.connect()
        try:
            await st.boot_and_report()
            for uid in ("RTS-NO", "RTS-LONG"):
                assert (await st.authorize(uid))["idTagInfo"]["status"] == "Invalid", uid
        finally:
            await st.disconnect()

        async def cdrs_pushed() -> bool:
            return all([await bodies(p, "cdrs", t) for p in (peer, hub) for t in (tx, tx_pushed)])

        await eventually(cdrs_pushed)
        expected = {
            tx: (("PT", "EMS", "RTS-CARD", "RFID", EMSP_TOKEN["contract_id"]), "REF-42"),
            tx_pushed: (("PT", "EMS", "RTS-NEVER", "RFID", "PT-EMS-C-PUSHED01-X"), "REF-P"),
        }
        for t, (token, reference) in expected.items():
            # pushed to the eMSP: every Session update and the CDR
            sessions = await bodies(peer, "sessions", t)
            [cdr] = await bodies(peer, "cdrs", t)
            assert sessions
            for obj in [*sessions, cdr]:
                if "cdr_token" in obj:  # (a PATCH may carry only what changed)
                    assert token_of(obj) == token, obj
                if "auth_method" in obj:
                    assert obj["auth_method"] == "AUTH_REQUEST", obj
                    assert obj["authorization_reference"] == reference, obj
            assert "cdr_token" in sessions[0] and "auth_method" in sessions[0]
            # MOBI.E: the eMSP's token too, but WHITELIST as its profile fixes it
            [hub_cdr] = await bodies(hub, "cdrs", t)
            assert token_of(hub_cdr) == token
            assert hub_cdr["auth_method"] == "WHITELIST"
            assert hub_cdr["authorization_reference"] == reference
        # pulled by the eMSP: the same
        for module in ("sessions", "cdrs"):
            got = await peer.pull(module, date_from="2000-01-01T00:00:00Z")
            assert got["ok"], got
            pages = [p["response"]["json"]["data"] for p in got["pages"]]
            objects = {str(o.get("session_id", o["id"])): o for page in pages for o in page}
            assert set(objects) == {str(tx), str(tx_pushed)}, module
            for t, (token, reference) in expected.items():
                obj = objects[str(t)]
                assert token_of(obj) == token
                assert obj["auth_method"] == "AUTH_REQUEST"
                assert obj["authorization_reference"] == reference
        # kept: one row per card (Authorize, StartTransaction and StopTransaction within
        # seconds); nothing of a refused card or of a hostile token
        assert len(await records(cpo, "RTS-CARD")) == 1
        assert len(await records(cpo, "RTS-NEVER")) == 1
        assert await records(cpo, "RTS-NO") == []
        assert await records(cpo, "RTS-LONG") == []


async def test_a_211_emsps_answer_without_token(cpo: Running) -> None:
    """2.1.1's AuthorizationInfo has no token: the Session and CDR carry the eMSP's party
    (its owner) with the id tag as auth_id, and AUTH_REQUEST."""
    try:
        async with EmspPeer(party_id="OLD", country_code="PT", versions=("2.1.1",)) as old:
            await join(cpo, old)
            info = {"allowed": "ALLOWED"}
            envelope = {"data": info, "status_code": 1000, "timestamp": "2026-12-01T12:00:00Z"}
            await old.control("POST", "authorize", {"OLD-CARD-1": {"envelope": envelope}})
            tx = await charge(cpo, "RTB1", "OLD-CARD-1")

            async def cdr_pushed() -> list[dict[str, Any]]:
                return [
                    r["body"]
                    for r in await old.requests(method="POST")
                    if "/cdrs" in r["path"] and r["body"].get("id") == str(tx)
                ]

            [cdr] = await eventually(cdr_pushed)
            assert cdr["auth_id"] == "OLD-CARD-1" and cdr["auth_method"] == "AUTH_REQUEST"
            assert "authorization_reference" not in cdr  # (not in 2.1.1)
            [kept] = await records(cpo, "OLD-CARD-1")
            assert (kept["country_code"], kept["party_id"], kept["contract_id"]) == (
                "PT",
                "OLD",
                "OLD-CARD-1",
            )
            sessions = [
                r["body"]
                for r in await old.requests(method="PUT")
                if r["path"].rstrip("/").endswith(f"/sessions/PT/CPO/{tx}")
            ]
            assert sessions and all(s["auth_method"] == "AUTH_REQUEST" for s in sessions)
            assert all(s["auth_id"] == "OLD-CARD-1" for s in sessions)
    except PeerVenvMissing as e:
        pytest.fail(str(e))
