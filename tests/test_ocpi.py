"""The OCPI 2.2.1 CPO interface, against a real, independent OCPI peer (extrawest-ocpi, in
its own venv), over real HTTP on loopback. Everything we emit is checked with two
independent models (ocpi-types and our strict checks, tests/ocpi_checks.py)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest

from charger_sim import Behaviour, Station
from tests import ocpi_checks as checks
from tests.conftest import Running, start_system
from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing

TOKEN = {
    "country_code": "PT",
    "party_id": "EMS",
    "uid": "04ABBE2A266581",
    "type": "RFID",
    "contract_id": "PT-EMS-C-12345678-X",
    "visual_number": "1234-5678",
    "issuer": "Test eMSP",
    "valid": True,
    "whitelist": "ALWAYS",
    "last_updated": "2026-01-01T00:00:00Z",
}
TARIFF = {
    "currency": "EUR",
    "type": "REGULAR",
    "elements": [
        {"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 23, "step_size": 1}]}
    ],
}


@pytest.fixture
async def cpo(tmp_path: Path) -> AsyncIterator[Running]:
    system, session, running = await start_system(tmp_path, ocpi={"page_limit": 3})
    try:
        yield running
    finally:
        await session.close()
        await system.stop()


@pytest.fixture
async def peer() -> AsyncIterator[EmspPeer]:
    try:
        async with EmspPeer(party_id="EMS", country_code="PT") as p:
            yield p
    except PeerVenvMissing as e:
        pytest.fail(str(e))


EMS_GRANT = {"role": "EMSP", "parties": ["PT/EMS"]}


async def token_a(cpo: Running, grant: dict[str, Any] | None = None) -> tuple[str, str]:
    """A token A granting ``grant`` (by default: eMSP PT/EMS, the ``peer`` fixture)."""
    status, body = await cpo.api.post("/api/v1/ocpi/token-a", grant or EMS_GRANT)
    assert status == 201, body
    return body["versions_url"], body["token"]


def auth(token: str, b64: bool = True) -> dict[str, str]:
    return {
        "Authorization": "Token " + (base64.b64encode(token.encode()).decode() if b64 else token)
    }


async def ocpi_get(
    cpo: Running, path: str, token: str | None, **kw: Any
) -> tuple[int, Any, dict[str, str]]:
    headers = auth(token) if token else {}
    headers.update(kw.pop("headers", {}))
    async with cpo.api.session.get(
        cpo.http_url + path, headers=headers, allow_redirects=False, **kw
    ) as r:
        return r.status, await r.json(content_type=None), dict(r.headers)


async def registered(cpo: Running, peer: EmspPeer) -> dict[str, Any]:
    """The peer registers with us as MOBI.E would: with a token A we issued."""
    versions_url, a = await token_a(cpo, peer.grant)
    result = await peer.register_with(versions_url, a)
    assert result["ok"], result
    return result


async def charge(cpo: Running, station_id: str, tag: str, wh: int = 7400) -> int:
    """One finished one-hour session (times in the recent past) on a simulated station;
    returns the transaction id."""
    st = Station(
        station_id,
        cpo.ocpp_url,
        2,
        behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.01),
    )
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    def at(minutes: int) -> str:
        return (start + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

    await st.connect()
    try:
        await st.boot_and_report()
        await st.status(1, "Preparing")
        answer = await st.start_transaction(1, tag, meter_start=0, timestamp=at(0))
        assert answer is not None
        tx = answer["transactionId"]
        await st.status(1, "Charging")
        for i in (1, 2):
            await st.meter_values(1, tx, energy_wh=i * wh // 3, power_w=7400, timestamp=at(20 * i))
        await st.stop_transaction(tx, meter_stop=wh, reason="Local", timestamp=at(60))
        await st.status(1, "Finishing")
        await st.status(1, "Available")
        return int(tx)
    finally:
        await st.disconnect()


# ---------------------------------------------------------------------------- versions


async def test_versions_and_details_with_token_a(cpo: Running) -> None:
    versions_url, a = await token_a(cpo)
    for b64 in (True, False):  # a token is accepted Base64-encoded and raw
        async with cpo.api.session.get(versions_url, headers=auth(a, b64)) as r:
            body = await r.json()
            assert r.status == 200
    checks.check_envelope(body, True, kind="version")
    assert [v["version"] for v in body["data"]] == ["2.2.1", "2.2", "2.1.1"]
    for version in ("2.2.1", "2.2"):
        status, body, headers = await ocpi_get(cpo, f"/ocpi/{version}", a)
        assert status == 200
        checks.check_envelope(body, False, kind="version_details", version=version)
        modules = {(e["identifier"], e["role"]) for e in body["data"]["endpoints"]}
        assert modules >= {
            ("credentials", "SENDER"),
            ("locations", "SENDER"),
            ("sessions", "SENDER"),
            ("cdrs", "SENDER"),
            ("tariffs", "SENDER"),
            ("tokens", "RECEIVER"),
        }
        # configuration modules carry no routing headers
        assert "OCPI-from-party-id" not in headers


async def test_transport_headers_slashes_and_errors(cpo: Running) -> None:
    _, a = await token_a(cpo)
    # X-Request-ID and X-Correlation-ID are echoed
    status, _, headers = await ocpi_get(
        cpo, "/ocpi/versions/", a, headers={"X-Request-ID": "r-1", "X-Correlation-ID": "c-1"}
    )
    assert (
        status == 200 and headers["X-Request-ID"] == "r-1" and headers["X-Correlation-ID"] == "c-1"
    )
    # and made up when missing (two different UUIDs)
    _, _, headers = await ocpi_get(cpo, "/ocpi/versions", a)
    assert headers["X-Request-ID"] != headers["X-Correlation-ID"]
    # with and without trailing slash, never a redirect
    for path in ("/ocpi/2.2.1", "/ocpi/2.2.1/"):
        assert (await ocpi_get(cpo, path, a))[0] == 200
    # unknown endpoint: 404 with an envelope
    status, body, _ = await ocpi_get(cpo, "/ocpi/2.2.1/nothing", a)
    assert status == 404 and body["status_code"] == 2000
    # invalid JSON: HTTP 400
    async with cpo.api.session.post(
        cpo.http_url + "/ocpi/2.2.1/credentials", data=b"{not json", headers=auth(a)
    ) as r:
        assert r.status == 400 and (await r.json())["status_code"] == 2001


# ---------------------------------------------------------------------------- security


async def test_tokens_are_required_and_token_a_opens_only_configuration(cpo: Running) -> None:
    _, a = await token_a(cpo)
    assert (await ocpi_get(cpo, "/ocpi/versions", None))[0] == 401
    assert (await ocpi_get(cpo, "/ocpi/versions", "not-a-token"))[0] == 401
    status, body, _ = await ocpi_get(
        cpo, "/ocpi/versions", None, headers={"Authorization": "Bearer " + a}
    )
    assert status == 401 and body["status_code"] == 2000
    for module in ("locations", "sessions?date_from=2020-01-01T00:00:00Z", "cdrs", "tariffs"):
        assert (await ocpi_get(cpo, f"/ocpi/2.2.1/{module}", a))[0] == 401, module
    # PUT and DELETE of credentials need a registration
    for method in ("PUT", "DELETE"):
        async with cpo.api.session.request(
            method, cpo.http_url + "/ocpi/2.2.1/credentials", json={}, headers=auth(a)
        ) as r:
            assert r.status == 405


async def test_token_a_is_spent_by_registration_and_c_replaces_it(
    cpo: Running, peer: EmspPeer
) -> None:
    versions_url, a = await token_a(cpo)
    result = await peer.register_with(versions_url, a)
    assert result["ok"], result
    c = result["token_c"]
    assert (await ocpi_get(cpo, "/ocpi/versions", a))[0] == 401  # A is invalid from now on
    assert (await ocpi_get(cpo, "/ocpi/2.2.1/locations", c))[0] == 200
    # POST again with C: already registered
    async with cpo.api.session.post(
        cpo.http_url + "/ocpi/2.2.1/credentials", json={}, headers=auth(c)
    ) as r:
        assert r.status == 405


async def test_one_peer_never_sees_or_changes_another_partys_data(
    cpo: Running, peer: EmspPeer, tmp_path: Path
) -> None:
    await registered(cpo, peer)
    await cpo.define_station("SEC1")
    assert (await peer.push_token(TOKEN))["ok"]
    tx = await charge(cpo, "SEC1", TOKEN["uid"])
    async with EmspPeer(party_id="OTH", country_code="PT") as other:
        await registered(cpo, other)
        # the other eMSP cannot read or write EMS's tokens
        got = await other.call("GET", module="tokens", path="PT/EMS/" + TOKEN["uid"])
        assert got["response"]["status"] == 404
        put = await other.push_token({**TOKEN, "valid": False}, validate=False)
        assert put["response"]["status"] == 404
        # nor see EMS's sessions and CDRs
        pulled = await other.pull("sessions", date_from="2000-01-01T00:00:00Z")
        assert pulled["objects"] == []
        assert (await other.pull("cdrs"))["objects"] == []
        # but it sees the public locations
        assert len((await other.pull("locations"))["objects"]) == 1
    # EMS sees its own
    sessions = (await peer.pull("sessions", date_from="2000-01-01T00:00:00Z"))["objects"]
    assert [s["id"] for s in sessions] == [str(tx)]
    token = await peer.call("GET", module="tokens", path="PT/EMS/" + TOKEN["uid"])
    assert token["response"]["json"]["data"]["valid"] is True


# ---------------------------------------------------------------------------- handshakes


async def test_peer_registers_with_us_mobie_way(cpo: Running, peer: EmspPeer) -> None:
    result = await registered(cpo, peer)
    checks.check_credentials(result["cpo_credentials"])
    assert result["cpo_credentials"]["roles"][0]["party_id"] == "CPO"
    # before answering, we called the peer's versions and details with its token B
    calls = await peer.requests()
    ours = [r for r in calls if r["method"] == "GET" and "/ocpi/" in r["path"]]
    assert ours, calls
    token_b = result["token_b"]
    assert all(
        r["headers"]["authorization"] == "Token " + base64.b64encode(token_b.encode()).decode()
        for r in ours
    )
    assert all(r["headers"]["x-request-id"] != r["headers"]["x-correlation-id"] for r in ours)
    _, peers = await cpo.api.get("/api/v1/ocpi/peers")
    [p] = peers["items"]
    assert p["version"] == "2.2.1" and p["initiated_by"] == "peer"
    assert p["roles"][0]["party_id"].upper() == "EMS"
    assert any(e["identifier"] == "locations" for e in p["endpoints"])


async def test_we_register_with_the_peer(cpo: Running, peer: EmspPeer) -> None:
    status, body = await cpo.api.post(
        "/api/v1/ocpi/register",
        {"versions_url": peer.versions_url, "token": peer.token_a, **peer.grant},
    )
    assert status == 201, body
    state = await peer.state()
    [conn] = state["connections"]
    assert conn["direction"] == "cpo_registered_with_peer"
    checks.check_credentials(conn["cpo_credentials"])
    # the peer can call us with the token we gave it
    assert (await peer.pull("locations"))["ok"]
    _, peers = await cpo.api.get("/api/v1/ocpi/peers")
    assert peers["items"][0]["initiated_by"] == "us"
    # a wrong token A: a clear error
    status, body = await cpo.api.post(
        "/api/v1/ocpi/register",
        {"versions_url": peer.versions_url, "token": "wrong-token", **peer.grant},
    )
    assert status == 502 and "3001" in body["message"]


async def test_renew_and_unregister(cpo: Running, peer: EmspPeer) -> None:
    first = await registered(cpo, peer)
    renewed = await peer.renew_credentials()
    assert renewed["ok"], renewed
    new_c = renewed["token_c"]
    assert new_c != first["token_c"]
    assert (await ocpi_get(cpo, "/ocpi/2.2.1/locations", first["token_c"]))[0] == 401
    assert (await ocpi_get(cpo, "/ocpi/2.2.1/locations", new_c))[0] == 200
    got = await peer.get_credentials()
    assert got["ok"] and got["response"]["json"]["data"]["token"] == new_c
    assert (await peer.unregister())["ok"]
    assert (await ocpi_get(cpo, "/ocpi/2.2.1/locations", new_c))[0] == 401
    _, peers = await cpo.api.get("/api/v1/ocpi/peers")
    assert peers["items"][0]["status"] == "unregistered"


# ---------------------------------------------------------------------------- modules


async def test_peer_pulls_every_module_and_all_of_it_is_valid(cpo: Running, peer: EmspPeer) -> None:
    await registered(cpo, peer)
    assert (await cpo.api.put("/api/v1/tariffs/T-ENERGY", TARIFF))[0] == 201
    await cpo.define_station("MOD1")
    body = (await cpo.api.get("/api/v1/stations/MOD1"))[1]
    definition = {"location": body["location"], "evses": body["evses"]}
    for evse in definition["evses"]:
        evse["connectors"][0]["tariff_ids"] = ["T-ENERGY"]
    assert (await cpo.api.put("/api/v1/stations/MOD1", definition))[0] == 200
    await cpo.define_station("MOD2")  # never connects: PLANNED
    assert (await peer.push_token(TOKEN))["ok"]
    tx = await charge(cpo, "MOD1", TOKEN["uid"], wh=9000)

    locations = await peer.pull("locations")
    assert locations["ok"] and not locations["validation_errors"], locations["validation_errors"]
    by_id = {loc["id"]: loc for loc in locations["objects"]}
    for loc in by_id.values():
        checks.check_location(loc)
    assert {e["status"] for e in by_id["LOC-MOD2"]["evses"]} == {"PLANNED"}
    assert [e["status"] for e in by_id["LOC-MOD1"]["evses"]] == ["AVAILABLE", "AVAILABLE"]
    # MOBI.E's extension goes to MOBI.E only: an eMSP gets plain OCPI (issue 19)
    assert "mobie_voltage_level" not in by_id["LOC-MOD1"]
    # the newest of its EVSEs', or (R8) the station's latest frame, when that is newer
    newest = max(e["last_updated"] for e in by_id["LOC-MOD1"]["evses"])
    _, station = await cpo.api.get("/api/v1/stations/MOD1")
    seen = station["last_seen"][:19] + "Z"
    assert by_id["LOC-MOD1"]["last_updated"] == max(newest, seen)

    sessions = await peer.pull("sessions", date_from="2000-01-01T00:00:00Z")
    assert sessions["ok"] and not sessions["validation_errors"], sessions["validation_errors"]
    [session] = sessions["objects"]
    checks.check_session(session)
    assert session["id"] == str(tx) and session["status"] == "COMPLETED"
    assert session["kwh"] == 9.0
    assert session["cdr_token"]["uid"] == TOKEN["uid"]
    assert session["cdr_token"]["party_id"] == "EMS"
    assert session["location_id"] == "LOC-MOD1" and session["evse_uid"] == "LOC-MOD1-01"

    cdrs = await peer.pull("cdrs")
    assert cdrs["ok"] and not cdrs["validation_errors"], cdrs["validation_errors"]
    [cdr] = cdrs["objects"]
    checks.check_cdr(cdr)
    assert cdr["session_id"] == str(tx) and cdr["total_energy"] == 9.0
    assert "mobie_voltage_level" not in cdr["cdr_location"]  # (MOBI.E's only)
    assert cdr["tariffs"][0]["id"] == "T-ENERGY"
    assert cdr["total_energy_cost"] == {"excl_vat": 2.25, "incl_vat": 2.7675}

    tariffs = await peer.pull("tariffs")
    assert tariffs["ok"] and not tariffs["validation_errors"]
    [tariff] = tariffs["objects"]
    checks.check_tariff(tariff)

    # one location, EVSE and connector by id
    for path, kind in (
        ("LOC-MOD1", "location"),
        ("LOC-MOD1/LOC-MOD1-02", "evse"),
        ("LOC-MOD1/LOC-MOD1-02/1", "connector"),
    ):
        got = await peer.call("GET", module="locations", path=path)
        assert got["response"]["status"] == 200
        checks.check_envelope(got["response"]["json"], False, kind=kind)
    missing = await peer.call("GET", module="locations", path="NOPE")
    assert missing["response"]["status"] == 404
    # every response of a functional module carries routing headers
    page = locations["pages"][0]
    headers = {k.lower(): v for k, v in page["response"]["headers"].items()}
    assert headers["ocpi-from-party-id"] == "CPO" and headers["ocpi-from-country-code"] == "PT"
    assert headers["ocpi-to-party-id"].upper() == "EMS"


async def test_sessions_need_date_from(cpo: Running, peer: EmspPeer) -> None:
    await registered(cpo, peer)
    got = await peer.call("GET", module="sessions")
    assert got["response"]["json"]["status_code"] == 2001


async def test_pagination_follows_link_with_date_filters(cpo: Running, peer: EmspPeer) -> None:
    await registered(cpo, peer)
    for i in range(8):
        await cpo.define_station(f"PAG{i}", 1)
    everything = await peer.pull("locations", date_from="2000-01-01T00:00:00Z")
    assert len(everything["pages"]) == 3  # page_limit is 3: 3 + 3 + 2
    ids = [loc["id"] for loc in everything["objects"]]
    assert ids == [f"LOC-PAG{i}" for i in range(8)]  # stable order, nothing twice
    first = everything["pages"][0]["response"]["headers"]
    headers = {k.lower(): v for k, v in first.items()}
    assert headers["x-total-count"] == "8" and headers["x-limit"] == "3"
    assert "date_from=2000-01-01T00%3A00%3A00Z" in headers["link"] and "offset=3" in headers["link"]
    assert 'rel="next"' in headers["link"]
    last = {k.lower(): v for k, v in everything["pages"][-1]["response"]["headers"].items()}
    assert "link" not in last
    # date_to is exclusive and filters what is counted
    cut = everything["objects"][0]["last_updated"]
    none = await peer.pull("locations", date_to=cut)
    assert none["objects"] == []
    later = await peer.pull("locations", date_from="2999-01-01T00:00:00Z")
    assert later["objects"] == []
    limited = await peer.pull("locations", limit=2, max_pages=1)
    assert len(limited["objects"]) == 2


async def test_tokens_receiver(cpo: Running, peer: EmspPeer) -> None:
    await registered(cpo, peer)
    put = await peer.push_token(TOKEN)
    assert put["ok"] and put["response"]["status"] == 201
    again = await peer.push_token(TOKEN)
    assert again["ok"] and again["response"]["status"] == 200
    patch = await peer.push_token(
        {"valid": False, "last_updated": "2026-02-01T00:00:00Z"},
        method="PATCH",
        uid=TOKEN["uid"],
        token_type="RFID",
        validate=False,
    )
    assert patch["ok"], patch
    got = await peer.call("GET", module="tokens", path="PT/EMS/" + TOKEN["uid"])
    token = got["response"]["json"]["data"]
    checks.check_token(token)
    assert token["valid"] is False and token["last_updated"] == "2026-02-01T00:00:00Z"
    # invalid input: 2001 naming the field, nothing stored
    cases = [
        ({"valid": True}, "PATCH", "last_updated"),
        ({**TOKEN, "whitelist": "SOMETIMES"}, "PUT", "whitelist"),
        ({**TOKEN, "uid": "OTHER-UID"}, "PUT", "uid"),
        ({**TOKEN, "valid": "yes"}, "PUT", "valid"),
        ({k: v for k, v in TOKEN.items() if k != "issuer"}, "PUT", "issuer"),
    ]
    for body, method, field in cases:
        result = await peer.push_token(
            body, method=method, uid=TOKEN["uid"], token_type="RFID", validate=False
        )
        answer = result["response"]["json"]
        assert answer["status_code"] == 2001, (field, answer)
        assert field in answer["status_message"], (field, answer)
    got = await peer.call("GET", module="tokens", path="PT/EMS/" + TOKEN["uid"])
    assert got["response"]["json"]["data"]["valid"] is False  # unchanged
    unknown = await peer.call("GET", module="tokens", path="PT/EMS/NOSUCHTOKEN")
    assert unknown["response"]["status"] == 404
    assert unknown["response"]["json"]["status_code"] == 2004


async def test_ocpi_token_authorizes_ocpp_and_invalid_ones_do_not(
    cpo: Running, peer: EmspPeer
) -> None:
    # whitelist only, as MOBI.E's profile has it (real-time authorization, which the
    # operator turns off here: tests/test_ocpi_realtime_auth.py)
    versions_url, a = await token_a(cpo, {**peer.grant, "policy": {"realtime_auth": False}})
    assert (await peer.register_with(versions_url, a))["ok"]
    await cpo.define_station("AUTH1")
    tokens = {
        "GOODTAG": {},
        "BLOCKEDTAG": {"valid": False},
        "NEVERTAG": {"whitelist": "NEVER"},
        "ALLOWEDTAG": {"whitelist": "ALLOWED"},
    }
    for uid, extra in tokens.items():
        assert (await peer.push_token({**TOKEN, "uid": uid, **extra}))["ok"]
    st = Station("AUTH1", cpo.ocpp_url, 2, behaviour=Behaviour(auto_heartbeat=False))
    await st.connect()
    try:
        await st.boot_and_report()
        results = {uid: (await st.authorize(uid))["idTagInfo"]["status"] for uid in tokens}
        assert results == {
            "GOODTAG": "Accepted",
            "BLOCKEDTAG": "Blocked",
            "NEVERTAG": "Invalid",
            "ALLOWEDTAG": "Accepted",
        }
        assert (await st.authorize("goodtag"))["idTagInfo"]["status"] == "Accepted"  # CiString
        start = await st.start_transaction(1, "GOODTAG")
        assert start is not None
    finally:
        await st.disconnect()
    _, tx = await cpo.api.get(f"/api/v1/transactions/{start['transactionId']}")
    assert tx["tag_owner"] == "PT/EMS"


async def test_ocpi_disabled_and_bad_config(tmp_path: Path) -> None:
    from csms.config import ConfigError, load_settings
    from ocpi_bridge.extension import OcpiExtension

    ext = OcpiExtension()
    settings = load_settings(None, {})
    assert ext.validate_config({}, settings) is None
    assert ext.validate_config({"enabled": False, "party_id": "x"}, settings) is None
    for raw, key in (
        ({"business_name": "X"}, "ocpi.party_id"),
        ({"party_id": "TOOLONG", "business_name": "X"}, "ocpi.party_id"),
        ({"party_id": "ABC", "business_name": "X", "offline_after": 900}, "ocpi.offline_after"),
        ({"party_id": "ABC", "business_name": "X", "colour": 1}, "ocpi.colour"),
    ):
        with pytest.raises(ConfigError) as e:
            ext.validate_config(raw, settings)
        assert key in str(e.value)
    # without [ocpi], /ocpi does not exist
    system, session, running = await start_system(tmp_path)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(running.http_url + "/ocpi/versions") as r:
                assert r.status == 404
    finally:
        await session.close()
        await system.stop()


async def test_a_22_peer_gets_raw_tokens_and_22_objects(cpo: Running) -> None:
    """extrawest-ocpi speaks only 2.2.1, so a small 2.2 peer (MOBI.E's profile names 2.2)
    plays this part: it must be called with its raw token, and receive 2.2 objects."""
    seen: list[str] = []

    async def versions(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(request.headers.get("Authorization", ""))
        base = f"http://127.0.0.1:{request.url.port}"
        return aiohttp.web.json_response(
            {
                "data": [{"version": "2.2", "url": base + "/22"}],
                "status_code": 1000,
                "timestamp": "2026-01-01T00:00:00Z",
            }
        )

    async def details(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(request.headers.get("Authorization", ""))
        base = f"http://127.0.0.1:{request.url.port}"
        return aiohttp.web.json_response(
            {
                "data": {
                    "version": "2.2",
                    "endpoints": [
                        {
                            "identifier": "credentials",
                            "role": "SENDER",
                            "url": base + "/22/credentials",
                        },
                        {
                            "identifier": "sessions",
                            "role": "RECEIVER",
                            "url": base + "/22/sessions",
                        },
                    ],
                },
                "status_code": 1000,
                "timestamp": "2026-01-01T00:00:00Z",
            }
        )

    app = aiohttp.web.Application()
    app.router.add_get("/versions", versions)
    app.router.add_get("/22", details)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        _, a = await token_a(cpo, {"role": "HUB", "parties": ["PT/MOB"]})
        body = {
            "token": "raw-token-B-of-the-22-peer",
            "url": f"http://127.0.0.1:{port}/versions",
            "roles": [
                {
                    "role": "HUB",
                    "business_details": {"name": "Hub 2.2"},
                    "party_id": "MOB",
                    "country_code": "PT",
                }
            ],
        }
        async with cpo.api.session.post(
            cpo.http_url + "/ocpi/2.2/credentials", json=body, headers=auth(a, b64=False)
        ) as r:
            answer = await r.json()
        assert answer["status_code"] == 1000, answer
        checks.check_credentials(answer["data"], version="2.2")
        assert seen == ["Token raw-token-B-of-the-22-peer"] * 2  # raw, not Base64
        c = answer["data"]["token"]
        # a hub sees every session, in 2.2 shape (no country/party in the CdrToken)
        await cpo.define_station("V22")
        await cpo.put_tag("LOCALTAG")
        tx = await charge(cpo, "V22", "LOCALTAG")
        async with cpo.api.session.get(
            cpo.http_url + "/ocpi/2.2/sessions",
            params={"date_from": "2000-01-01T00:00:00Z"},
            headers=auth(c, b64=False),
        ) as r:
            page = await r.json()
        [session] = page["data"]
        assert session["id"] == str(tx)
        assert "country_code" not in session["cdr_token"]
        checks.check_session(session, version="2.2")
        async with cpo.api.session.get(
            cpo.http_url + "/ocpi/2.2/cdrs", headers=auth(c, b64=False)
        ) as r:
            [cdr] = (await r.json())["data"]
        checks.check_cdr(cdr, version="2.2")
    finally:
        await runner.cleanup()


async def test_tariffs_from_config_and_api(tmp_path: Path) -> None:
    configured = {
        "id": "CFG-1",
        "currency": "EUR",
        "elements": [{"price_components": [{"type": "FLAT", "price": 1.5, "step_size": 1}]}],
    }
    system, session, cpo = await start_system(tmp_path, ocpi={"tariffs": [configured]})
    try:
        _, listed = await cpo.api.get("/api/v1/tariffs")
        assert [t["id"] for t in listed["items"]] == ["CFG-1"]
        checks.check_tariff(listed["items"][0])
        status, body = await cpo.api.put("/api/v1/tariffs/T2", TARIFF)
        assert status == 201 and body["id"] == "T2" and body["party_id"] == "CPO"
        assert (await cpo.api.put("/api/v1/tariffs/T2", TARIFF))[0] == 200
        bad = {**TARIFF, "currency": "euro"}
        status, body = await cpo.api.put("/api/v1/tariffs/T3", bad)
        assert status == 422 and body["fields"][0]["field"] == "currency"
        bad = {**TARIFF, "elements": []}
        status, body = await cpo.api.put("/api/v1/tariffs/T3", bad)
        assert status == 422 and body["fields"][0]["field"] == "elements"
        assert (await cpo.api.request("DELETE", "/api/v1/tariffs/T2"))[0] == 204
        assert (await cpo.api.get("/api/v1/tariffs/T2"))[0] == 404
    finally:
        await session.close()
        await system.stop()
    # an invalid configured tariff stops the start, naming the key
    from csms.config import ConfigError, load_settings
    from ocpi_bridge.extension import OcpiExtension

    raw = {"party_id": "CPO", "business_name": "X", "tariffs": [{**configured, "currency": "?"}]}
    with pytest.raises(ConfigError) as e:
        OcpiExtension().validate_config(raw, load_settings(None, {}))
    assert "ocpi.tariffs.0.currency" in str(e.value)


async def test_a_hub_like_mobie_registers_pulls_everything_pushes_and_renews(
    cpo: Running,
) -> None:
    try:
        async with EmspPeer(party_id="MOB", country_code="PT", role="HUB") as hub:
            await registered(cpo, hub)
            await cpo.define_station("HUB1")
            await cpo.put_tag("LOCALTAG")
            local_tx = await charge(cpo, "HUB1", "LOCALTAG")
            # a hub pushes the tokens of the eMSPs behind it
            pushed = await hub.push_token({**TOKEN, "party_id": "CEM"})
            assert pushed["ok"], pushed
            renewed = await hub.renew_credentials()
            assert renewed["ok"], renewed
            for module, params in (
                ("locations", {}),
                ("sessions", {"date_from": "2000-01-01T00:00:00Z"}),
                ("cdrs", {}),
                ("tariffs", {}),
            ):
                pulled = await hub.pull(module, **params)
                assert pulled["ok"] and not pulled["validation_errors"], (module, pulled)
                for obj in pulled["objects"]:
                    {
                        "locations": checks.check_location,
                        "sessions": checks.check_session,
                        "cdrs": checks.check_cdr,
                        "tariffs": checks.check_tariff,
                    }[module](obj)
                if module in ("sessions", "cdrs"):  # a hub sees sessions of local tags too
                    assert [o.get("session_id", o["id"]) for o in pulled["objects"]] == [
                        str(local_tx)
                    ]
    except PeerVenvMissing as e:
        pytest.fail(str(e))
