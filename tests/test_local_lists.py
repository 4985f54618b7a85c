"""Local authorization lists kept in sync (issue 16, item 1): the pure core, then end to end
over real sockets with the simulator as the station, the OCPI tokens endpoint as the eMSP
(through the flaky hub's registration) and the operator API and web interface."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from charger_sim import Behaviour, Station
from csms.clock import FakeClock
from csms.local_lists import (
    Entry,
    Step,
    apply,
    capped,
    desired_list,
    differences,
    judge,
    next_version,
    plan,
    read_lengths,
)
from ocpi_bridge.tokens import offline_entry
from tests.conftest import Running, start_system
from tests.flaky_hub import FlakyHub
from tests.test_push_faults import eventually, register
from tests.test_web import ADMIN, VIEWER, WebClient, web_overrides

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# ---------------------------------------------------------------------------- the core


def test_desired_list_own_first_accepted_unexpired_one_per_tag() -> None:
    own = [
        Entry("TAG1", "Accepted", NOW + timedelta(days=1), "PARENT"),
        Entry("OLD", "Accepted", NOW - timedelta(seconds=1)),
        Entry("BLOCKED", "Blocked"),
        Entry("X" * 21),
    ]
    offline = [Entry("tag1"), Entry("UID1", parent="P" * 21), Entry("UID2")]
    got = desired_list(own, offline, NOW)
    assert [e.id_tag for e in got] == ["TAG1", "UID1", "UID2"]
    assert got[0].expiry == NOW + timedelta(days=1) and got[0].parent == "PARENT"
    assert got[1].parent is None  # (too long for OCPP: dropped, the entry stays)
    kept, left = capped(got, 2)
    assert [e.id_tag for e in kept] == ["TAG1", "UID1"] and [e.id_tag for e in left] == ["UID2"]
    assert capped(got, None) == (got, [])


def test_plan_full_in_chunks_then_differential_removals_first() -> None:
    desired = [Entry(f"T{i}") for i in range(5)]
    steps = plan(desired, None, full=False, next_version=4, send_max=2)
    assert [(s.update_type, s.version, len(s.changes)) for s in steps] == [
        ("Full", 4, 2),
        ("Differential", 5, 2),
        ("Differential", 6, 1),
    ]
    acked: dict[str, Entry] | None = None
    for s in steps:
        acked = apply(acked, s)
    assert acked is not None and sorted(acked) == sorted(e.key for e in desired)
    # one removed, one added, one changed: the removal comes first
    new = [*desired[1:], Entry("T9"), Entry("T2", "Accepted", NOW)]
    new = [e for e in new if e.id_tag != "T2" or e.expiry]
    removes, upserts = differences(new, acked)
    assert removes == [("T0", None)]
    assert [t for t, _ in upserts] == ["T9", "T2"]
    steps = plan(new, acked, full=False, next_version=7, send_max=2)
    assert [(s.update_type, s.version) for s in steps] == [("Differential", 7), ("Differential", 8)]
    assert steps[0].changes[0] == ("T0", None)
    payload = steps[0].payload()
    assert payload["localAuthorizationList"][0] == {"idTag": "T0"}
    assert payload["localAuthorizationList"][1]["idTagInfo"] == {"status": "Accepted"}
    for s in steps:
        acked = apply(acked, s)
    assert plan(new, acked, full=False, next_version=9, send_max=2) == []
    # a forced full update of an empty list still clears the station's
    assert plan([], acked, full=True, next_version=9, send_max=2) == [Step("Full", 9, ())]
    assert Step("Full", 9, ()).payload() == {"listVersion": 9, "updateType": "Full"}


def test_answers_versions_and_lengths() -> None:
    assert judge("Differential", {"status": "Accepted"}) == "accepted"
    assert judge("Differential", {"status": "VersionMismatch"}) == "full"
    assert judge("Differential", {"status": "Failed"}) == "full"
    assert judge("Full", {"status": "Failed"}) == "failed"
    assert judge("Full", {"status": "NotSupported"}) == "unsupported"
    assert judge("Full", "junk") == "invalid"
    assert next_version(None, 3, 7) == 8 and next_version(None, None) == 1
    assert next_version(2**31 - 1) == 1
    keys = [
        {"key": "LocalAuthListMaxLength", "value": "50"},
        {"key": "SendLocalListMaxLength", "value": " 10 "},
        {"key": "LocalAuthListEnabled", "value": "False"},
    ]
    assert read_lengths(keys, 20) == (50, 10, False)
    assert read_lengths([{"key": "SendLocalListMaxLength", "value": "-1"}], 20) == (None, 20, None)
    assert read_lengths(None, 20) == (None, 20, None)


def test_which_ocpi_tokens_go_on_the_lists() -> None:
    def token(**kw: Any) -> dict[str, Any]:
        return {"uid": "U1", "type": "RFID", "valid": True, "whitelist": "ALWAYS", **kw}

    assert offline_entry(token()) == Entry("U1")
    assert offline_entry(token(whitelist="ALLOWED")) == Entry("U1")
    assert offline_entry(token(whitelist="ALLOWED_OFFLINE")) == Entry("U1")
    assert offline_entry(token(whitelist="NEVER")) is None
    assert offline_entry(token(valid=False)) is None
    assert offline_entry(token(type="APP_USER")) is None
    assert offline_entry(token(uid="U" * 21)) is None
    assert offline_entry(token(group_id="G1")) == Entry("U1", parent="G1")


# ---------------------------------------------------------------------------- end to end

OCPI = {"offline_after": 30, "session_update_interval": 1, "push_timeout": 0.5}


def tok(uid: str, party: str, *, valid: bool = True, whitelist: str = "ALWAYS") -> dict[str, Any]:
    return {
        "country_code": "PT",
        "party_id": party,
        "uid": uid,
        "type": "RFID",
        "contract_id": f"PT-{party}-C-{uid}",
        "issuer": f"eMSP {party}",
        "valid": valid,
        "whitelist": whitelist,
        "last_updated": "2026-01-01T00:00:00Z",
    }


class World:
    def __init__(self, cpo: Running, hub: FlakyHub, clock: FakeClock) -> None:
        self.cpo = cpo
        self.hub = hub
        self.clock = clock

    async def emsp(self, method: str, uid: str, body: dict[str, Any]) -> None:
        """The eMSP (through the hub) PUTs or PATCHes a token at our tokens endpoint."""
        assert self.hub.token_c is not None
        token = base64.b64encode(self.hub.token_c.encode()).decode()
        party = self.hub.party_id
        async with aiohttp.ClientSession() as s:
            async with s.request(
                method,
                f"{self.cpo.http_url}/ocpi/2.2.1/tokens/PT/{party}/{uid}",
                json=body,
                headers={"Authorization": f"Token {token}"},
            ) as r:
                answer = await r.json()
        assert answer["status_code"] == 1000, answer

    def station(self, station_id: str, **config: str) -> Station:
        return Station(
            station_id,
            self.cpo.ocpp_url,
            1,
            behaviour=Behaviour(
                auto_heartbeat=False, auto_meter_values=False, auto_reconnect=False, step_delay=0
            ),
            config={"AllowOfflineTxForUnknownId": "false", **config},
        )


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    system, session, cpo = await start_system(
        tmp_path,
        clock=clock,
        ocpi=OCPI,
        local_lists__reconnect_delay="0",
        local_lists__check_interval="600",
        **web_overrides(),
    )
    try:
        async with FlakyHub() as hub:
            await register(hub, cpo.http_url, cpo.api)
            yield World(cpo, hub, clock)
    finally:
        await session.close()
        await system.stop()


def sends(st: Station) -> list[dict[str, Any]]:
    return [p for a, p in st.calls_received if a == "SendLocalList"]


async def settled(cpo: Running, station_id: str) -> dict[str, Any]:
    """The station's list once nothing is pending (bounded wait)."""
    out: dict[str, Any] = {}

    async def done() -> bool:
        _, body = await cpo.api.get(f"/api/v1/stations/{station_id}/local-list")
        out.update(body)
        return body["state"] == "synced" and not body["pending_adds"] + body["pending_removes"]

    await eventually(done, 10)
    return out


async def test_lists_follow_id_tags_and_ocpi_tokens(world: World) -> None:
    cpo, hub = world.cpo, world.hub
    party = hub.party_id
    await cpo.put_tag("TAG1")
    await cpo.put_tag("TAG2", expiry_date="2099-01-01T00:00:00Z", parent_id_tag="GROUP")
    await cpo.put_tag("BLOCKED", status="Blocked")
    await cpo.put_tag("GONE", expiry_date="2020-01-01T00:00:00Z")
    await world.emsp("PUT", "UID1", tok("UID1", party))
    await world.emsp("PUT", "UID2", tok("UID2", party, whitelist="ALLOWED_OFFLINE"))
    await world.emsp("PUT", "UID3", tok("UID3", party, whitelist="NEVER"))
    await cpo.define_station("LL1", connectors=1)
    st = world.station("LL1")
    other = world.station("LL1B")
    await st.go_online()
    try:
        # off by default: nothing is sent
        code, body = await cpo.api.get("/api/v1/stations/LL1/local-list")
        assert code == 200 and body["enabled"] is False
        assert sends(st) == []

        # on: the whole list, in one Full update
        code, body = await cpo.api.put("/api/v1/stations/LL1/local-list", {"enabled": True})
        assert code == 200 and body["enabled"] is True
        view = await settled(cpo, "LL1")
        assert sorted(st.local_auth_list) == ["TAG1", "TAG2", "UID1", "UID2"]
        assert st.local_auth_list["TAG2"] == {
            "status": "Accepted",
            "expiryDate": "2099-01-01T00:00:00.000Z",
            "parentIdTag": "GROUP",
        }
        assert [p["updateType"] for p in sends(st)] == ["Full"]
        assert view["version"] == st.local_list_version and view["acked_count"] == 4
        assert view["local_auth_list_max_length"] == 100

        # a new id tag: one Differential update at once (the clock does not move)
        await cpo.put_tag("TAG3")
        await eventually(lambda: "TAG3" in st.local_auth_list, 10)
        last = sends(st)[-1]
        assert last["updateType"] == "Differential"
        assert last["localAuthorizationList"] == [
            {"idTag": "TAG3", "idTagInfo": {"status": "Accepted"}}
        ]
        assert last["listVersion"] == view["version"] + 1

        # a second station holding the list too
        await cpo.define_station("LL1B", connectors=1)
        await cpo.api.put("/api/v1/stations/LL1B/local-list", {"enabled": True})
        await other.go_online()
        await settled(cpo, "LL1B")
        assert "UID1" in other.local_auth_list

        # the eMSP invalidates UID1: removed at once from both (the clock does not move)
        before = world.clock.now()
        patch = {"valid": False, "last_updated": "2026-01-02T00:00:00Z"}
        await world.emsp("PATCH", "UID1", patch)
        await eventually(lambda: "UID1" not in st.local_auth_list, 10)
        await eventually(lambda: "UID1" not in other.local_auth_list, 10)
        assert world.clock.now() - before < timedelta(minutes=1)
        assert sends(st)[-1]["localAuthorizationList"] == [{"idTag": "UID1"}]
        assert sends(other)[-1]["localAuthorizationList"] == [{"idTag": "UID1"}]
        await other.disconnect()

        # offline: a listed tag starts, a removed one is refused; UID2 is invalidated
        # meanwhile and removed when the station returns
        await st.go_offline()
        await world.emsp("PUT", "UID2", tok("UID2", party, valid=False))
        assert "UID2" in st.local_auth_list
        assert await st.start_charging(1, "UID1") is None
        assert not st.connectors[1].in_transaction
        await st.start_charging(1, "TAG2")
        assert st.connectors[1].in_transaction and st.connectors[1].id_tag == "TAG2"
        await st.stop_charging(1)
        body: dict[str, Any] = {}

        async def pending_removal() -> bool:
            _, got = await cpo.api.get("/api/v1/stations/LL1/local-list")
            body.update(got)
            return bool(got["pending_removes"] == 1)

        await eventually(pending_removal, 10)
        assert body["connected"] is False and body["pending_remove_tags"] == ["UID2"]
        assert "UID2" in st.local_auth_list  # (not sent while it is away)
        await st.go_online(boot=False)  # (a reconnection without BootNotification)
        await eventually(lambda: "UID2" not in st.local_auth_list, 10)
        assert sorted(st.local_auth_list) == ["TAG1", "TAG2", "TAG3"]
        await settled(cpo, "LL1")

        # the station holds another version (a reset, another system): a Full update at
        # the next check
        st.local_list_version = 77
        st.local_auth_list.pop("TAG1")
        count = len(sends(st))
        await world.clock.advance(600)
        await eventually(lambda: "TAG1" in st.local_auth_list, 10)
        assert [p["updateType"] for p in sends(st)[count:]] == ["Full"]
        assert sends(st)[-1]["listVersion"] > 77

        async def acknowledged() -> bool:
            _, got = await cpo.api.get("/api/v1/stations/LL1/local-list")
            return bool(got["version"] == st.local_list_version and got["state"] == "synced")

        await eventually(acknowledged, 10)

        # switched off: left alone
        code, body = await cpo.api.put("/api/v1/stations/LL1/local-list", {"enabled": False})
        assert code == 200 and body["enabled"] is False
        count = len(sends(st))
        await cpo.put_tag("TAG4")
        await world.clock.advance(30)
        await asyncio.sleep(0.2)
        assert len(sends(st)) == count
    finally:
        await st.disconnect()
        await other.disconnect()


async def test_room_and_chunks_are_respected(world: World) -> None:
    cpo = world.cpo
    for n in range(7):
        await cpo.put_tag(f"T{n}")
    await cpo.define_station("LL2", connectors=1)
    # switched on before the station is there: its list is sent once it booted
    code, _ = await cpo.api.put("/api/v1/stations/LL2/local-list", {"enabled": True})
    assert code == 200
    st = world.station("LL2", LocalAuthListMaxLength="5", SendLocalListMaxLength="2")
    await st.go_online()
    try:
        view = await settled(cpo, "LL2")
        got = sends(st)
        assert [p["updateType"] for p in got] == ["Full", "Differential", "Differential"]
        assert all(len(p.get("localAuthorizationList", [])) <= 2 for p in got)
        versions = [p["listVersion"] for p in got]
        assert versions == sorted(set(versions))
        assert sorted(st.local_auth_list) == ["T0", "T1", "T2", "T3", "T4"]
        assert view["left_out"] == 2 and view["left_out_tags"] == ["T5", "T6"]
        assert view["local_auth_list_max_length"] == 5
        assert view["send_local_list_max_length"] == 2

        # a forced full update through the API, in chunks again
        count = len(got)
        code, _ = await cpo.api.post("/api/v1/stations/LL2/local-list/sync")
        assert code == 202
        await eventually(lambda: len(sends(st)) >= count + 3, 10)
        updates = [p["updateType"] for p in sends(st)[count:]]
        assert updates == ["Full", "Differential", "Differential"]
        await settled(cpo, "LL2")
        assert len(st.local_auth_list) == 5

        # the station moved on meanwhile: the Differential is a VersionMismatch, then Full
        st.local_list_version = 1000
        count = len(sends(st))
        code, _ = await cpo.api.request("DELETE", "/api/v1/id-tags/T0")
        assert code == 204
        await eventually(lambda: "T5" in st.local_auth_list, 10)
        updates = [(p["updateType"], p["listVersion"]) for p in sends(st)[count:]]
        assert updates[0][0] == "Differential" and updates[0][1] <= 1000
        assert [u for u, _ in updates[1:]] == ["Full", "Differential", "Differential"]
        assert updates[1][1] > updates[0][1]
        assert sorted(st.local_auth_list) == ["T1", "T2", "T3", "T4", "T5"]
        view = await settled(cpo, "LL2")
        assert view["left_out_tags"] == ["T6"]
    finally:
        await st.disconnect()


async def test_station_without_the_feature(world: World) -> None:
    cpo = world.cpo
    await cpo.put_tag("TAG1")
    await cpo.define_station("LL3", connectors=1)
    st = world.station("LL3", LocalAuthListEnabled="false")
    await cpo.define_station("LL4", connectors=1)
    st4 = world.station("LL4")
    st4.on_call("SendLocalList", lambda payload: {"status": "NotSupported"})
    await cpo.define_station("LL8", connectors=1)
    st8 = world.station("LL8")
    st8.on_call("GetLocalListVersion", lambda payload: Station.CALL_ERROR("NotImplemented"))
    await st.go_online()
    await st4.go_online()
    await st8.go_online()
    try:
        for sid in ("LL3", "LL4", "LL8"):
            await cpo.api.put(f"/api/v1/stations/{sid}/local-list", {"enabled": True})

        async def state(sid: str, wanted: str) -> bool:
            _, body = await cpo.api.get(f"/api/v1/stations/{sid}/local-list")
            return bool(body["state"] == wanted)

        await eventually(lambda: state("LL3", "disabled_on_station"), 10)
        await eventually(lambda: state("LL4", "unsupported"), 10)
        await eventually(lambda: state("LL8", "unsupported"), 10)
        assert sends(st) == [] and sends(st8) == []
        count = len(sends(st4))
        # not tried again when the list changes
        await cpo.put_tag("TAG2")
        await world.clock.advance(30)
        await asyncio.sleep(0.2)
        assert len(sends(st4)) == count
        code, body = await cpo.api.get("/api/v1/local-lists?limit=10")
        assert code == 200 and body["total"] >= 2
        by_id = {i["station_id"]: i for i in body["items"]}
        assert by_id["LL4"]["state"] == "unsupported" and by_id["LL4"]["error"]
    finally:
        await st.disconnect()
        await st4.disconnect()
        await st8.disconnect()


async def test_api_refuses_bad_requests(world: World) -> None:
    cpo = world.cpo
    await cpo.define_station("LL5", connectors=1)
    assert (await cpo.api.get("/api/v1/stations/NOPE/local-list"))[0] == 404
    assert (await cpo.api.put("/api/v1/stations/NOPE/local-list", {"enabled": True}))[0] == 404
    for bad in ({"enabled": "yes"}, {"enabled": True, "x": 1}, [], {"on": True}):
        code, body = await cpo.api.put("/api/v1/stations/LL5/local-list", bad)
        assert code == 422 and body["error"] == "invalid_body", (bad, body)
    code, body = await cpo.api.request(
        "PUT", "/api/v1/stations/LL5/local-list", data=b"{", auth=True
    )
    assert code == 400 and "error" in body
    code, body = await cpo.api.post("/api/v1/stations/LL5/local-list/sync")
    assert code == 409 and body["error"] == "disabled"
    await cpo.api.put("/api/v1/stations/LL5/local-list", {"enabled": True})
    code, body = await cpo.api.post("/api/v1/stations/LL5/local-list/sync")
    assert code == 409 and body["error"] == "station_offline"
    assert (await cpo.api.get("/api/v1/local-lists?limit=0"))[0] == 400
    assert (await cpo.api.get("/api/v1/local-lists?limit=x"))[0] == 400
    assert (await cpo.api.get("/api/v1/local-lists", auth=False))[0] == 401
    code, body = await cpo.api.get("/api/v1/local-lists?limit=1&offset=0")
    assert code == 200 and len(body["items"]) == 1 and body["limit"] == 1


async def test_web_panel_switch_and_sync(world: World) -> None:
    cpo = world.cpo
    await cpo.put_tag("TAG1")
    await cpo.define_station("LL6", connectors=1)
    st = world.station("LL6")
    await st.go_online()
    admin, viewer = WebClient(cpo.http_url), WebClient(cpo.http_url)
    try:
        assert (await viewer.login(VIEWER)).status == 303
        code, page = await viewer.get("/stations/LL6")
        assert code == 200 and 'id="local-list"' in page and 'data-enabled="false"' in page
        assert 'id="local-list-switch"' not in page  # (admins only)
        code, _, _ = await viewer.post("/stations/LL6/local-list", {"enabled": "true"})
        assert code == 403
        assert (await admin.login(ADMIN)).status == 303
        code, page = await admin.get("/stations/LL6")
        assert 'id="local-list-switch"' in page
        code, _, _ = await admin.post("/stations/LL6/local-list", {"enabled": "true"}, csrf=False)
        assert code == 403  # (no CSRF token)
        code, _, _ = await admin.post("/stations/LL6/local-list", {"enabled": "maybe"})
        assert code == 400
        code, _, _ = await admin.post("/stations/NOPE/local-list", {"enabled": "true"})
        assert code == 404
        assert sends(st) == []
        code, _, headers = await admin.post("/stations/LL6/local-list", {"enabled": "true"})
        assert code == 303 and headers["Location"].endswith("/stations/LL6#local-list")
        await eventually(lambda: "TAG1" in st.local_auth_list, 10)
        await settled(cpo, "LL6")
        code, page = await admin.get("/stations/LL6")
        assert 'data-enabled="true"' in page and 'data-state="synced"' in page
        assert 'id="local-list-sync"' in page
        count = len(sends(st))
        code, _, _ = await admin.post("/stations/LL6/local-list/sync", {})
        assert code == 303
        await eventually(lambda: len(sends(st)) > count, 10)
        assert sends(st)[-1]["updateType"] == "Full"
    finally:
        await admin.close()
        await viewer.close()
        await st.disconnect()


async def test_simulator_local_list_like_a_charger(world: World) -> None:
    """The simulator's side, through csms's command API: the station refuses what a real
    charger refuses, and applies an update whole or not at all."""
    cpo = world.cpo
    await cpo.define_station("LL7", connectors=1)
    st = world.station("LL7", LocalAuthListMaxLength="2", SendLocalListMaxLength="3")
    await st.go_online()

    async def send(version: int, kind: str, tags: list[str]) -> str:
        items = [{"idTag": t, "idTagInfo": {"status": "Accepted"}} for t in tags]
        body = {"listVersion": version, "updateType": kind, "localAuthorizationList": items}
        code, answer = await cpo.api.post("/api/v1/stations/LL7/commands/SendLocalList", body)
        assert code == 200, answer
        return str(answer["response"]["status"])

    try:
        assert await send(1, "Full", ["A", "B"]) == "Accepted"
        assert await send(2, "Full", ["A", "B", "C"]) == "Failed"  # beyond LocalAuthListMax
        assert await send(2, "Full", ["A", "B", "C", "D"]) == "Failed"  # beyond SendLocalList
        assert await send(2, "Differential", ["C"]) == "Failed"  # would hold 3
        assert await send(1, "Differential", []) == "VersionMismatch"
        assert sorted(st.local_auth_list) == ["A", "B"] and st.local_list_version == 1
        st.config.set("LocalAuthListEnabled", "false")
        assert await send(3, "Full", []) == "NotSupported"
        code, answer = await cpo.api.post("/api/v1/stations/LL7/commands/GetLocalListVersion", {})
        assert code == 200 and answer["response"] == {"listVersion": -1}
    finally:
        await st.disconnect()
