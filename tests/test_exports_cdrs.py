"""The CSV export of the CDRs the bridge made: a session over a real websocket from the
simulator, its CDR priced with our tariff and POSTed to a hub (the independent OCPI peer,
extrawest-ocpi), then exported by the API and the web interface, with each filter."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ocpi_bridge.exports import CDR_COLUMNS, cdr_row
from tests.conftest import Running, start_system
from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing
from tests.test_exports import fetch, rows_of
from tests.test_ocpi import TARIFF, TOKEN, charge
from tests.test_web import VIEWER, WebClient, web_overrides

CDRS = "/api/v1/exports/cdrs.csv"


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Running, EmspPeer]]:
    system, session, cpo = await start_system(tmp_path, ocpi={}, **web_overrides())
    try:
        async with EmspPeer(party_id="MOB", country_code="PT", role="HUB") as hub:
            _, body = await cpo.api.post("/api/v1/ocpi/token-a", hub.grant)
            assert (await hub.register_with(body["versions_url"], body["token"]))["ok"]
            yield cpo, hub
    except PeerVenvMissing as e:
        pytest.fail(str(e))
    finally:
        await session.close()
        await system.stop()


def days_around_now() -> str:
    today = datetime.now(UTC).astimezone(ZoneInfo("Europe/Lisbon")).date()
    return f"from={today - timedelta(days=1)}&to={today + timedelta(days=1)}"


async def exported(cpo: Running, query: str) -> list[dict[str, str]]:
    status, headers, body = await fetch(cpo, f"{CDRS}?{query}")
    assert status == 200, body[:300]
    assert headers["Content-Disposition"].startswith('attachment; filename="cdrs_')
    assert body.split(b"\r\n")[0].decode() == ",".join(CDR_COLUMNS)
    return rows_of(body)


async def test_cdrs_export(setup: tuple[Running, EmspPeer]) -> None:
    cpo, hub = setup
    assert (await cpo.api.put("/api/v1/tariffs/T-ENERGY", TARIFF))[0] == 201
    for sid in ("CDR-1", "CDR-2"):
        await cpo.define_station(sid)
        body = (await cpo.api.get(f"/api/v1/stations/{sid}"))[1]
        definition = {"location": body["location"], "evses": body["evses"]}
        for evse in definition["evses"]:
            evse["connectors"][0]["tariff_ids"] = ["T-ENERGY"]
        assert (await cpo.api.put(f"/api/v1/stations/{sid}", definition))[0] == 200
    assert (await hub.push_token(TOKEN))["ok"]
    await cpo.put_tag("LOCAL-1")
    tx1 = await charge(cpo, "CDR-1", TOKEN["uid"], wh=9000)
    tx2 = await charge(cpo, "CDR-2", "LOCAL-1", wh=3000)

    # the CDRs are made at the stop and POSTed to the hub: wait for both acknowledgements
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        rows = await exported(cpo, days_around_now())
        if len(rows) == 2 and all(r["hub_acknowledged"] == "true" for r in rows):
            break
        assert asyncio.get_running_loop().time() < deadline, rows
        await asyncio.sleep(0.2)
    by_session = {r["session_id"]: r for r in rows}
    ocpi = by_session[str(tx1)]
    assert ocpi["cdr_id"] == str(tx1) and ocpi["station_id"] == "CDR-1"
    assert ocpi["location_id"] == "LOC-CDR-1" and ocpi["evse_uid"] == "LOC-CDR-1-01"
    assert ocpi["evse_id"] == "PT*MOB*ECDR-1*1" and ocpi["connector_id"] == "1"
    assert ocpi["token_uid"] == TOKEN["uid"] and ocpi["contract_id"] == TOKEN["contract_id"]
    assert ocpi["token_type"] == "RFID" and ocpi["token_party"] == "PT/EMS"
    assert ocpi["energy_kwh"] == "9.0" and ocpi["currency"] == "EUR"
    assert ocpi["energy_cost_excl_vat"] == "2.25"
    assert ocpi["total_cost_excl_vat"] == "2.25" and ocpi["total_cost_incl_vat"] == "2.7675"
    assert ocpi["tariff_ids"] == "T-ENERGY" and ocpi["cpo_party"] == "PT/CPO"
    assert ocpi["hub_acknowledged_at"] != ""
    # times in Lisbon's zone with the offset
    offset = datetime.now(ZoneInfo("Europe/Lisbon")).isoformat()[-6:]
    for column in ("start_time", "end_time", "issued_at", "hub_acknowledged_at"):
        assert ocpi[column].endswith(offset), (column, ocpi[column])
    start = datetime.fromisoformat(ocpi["start_time"])
    end = datetime.fromisoformat(ocpi["end_time"])
    assert end - start == timedelta(hours=1) and ocpi["time_h"] == "1.0"
    local = by_session[str(tx2)]
    assert local["token_uid"] == "LOCAL-1" and local["total_cost_excl_vat"] == "0.75"

    # filters: station, token (case-insensitive), both
    assert [r["session_id"] for r in await exported(cpo, days_around_now() + "&station=CDR-2")] == [
        str(tx2)
    ]
    token = TOKEN["uid"].lower()
    assert [r["session_id"] for r in await exported(cpo, f"{days_around_now()}&token={token}")] == [
        str(tx1)
    ]
    assert await exported(cpo, f"{days_around_now()}&station=CDR-2&token={token}") == []
    # Excel PT: semicolons, decimal commas, a BOM
    status, _, body = await fetch(cpo, f"{CDRS}?{days_around_now()}&format=excel-pt")
    assert status == 200 and body.startswith(b"\xef\xbb\xbf")
    excel = {r["session_id"]: r for r in rows_of(body[3:], sep=";")}
    assert excel[str(tx1)]["total_cost_incl_vat"] == "2,7675"
    # refusals as for sessions
    for query, status_code in (
        ("from=2026-10-01", 422),
        ("from=2026-10-01&to=2025-10-01", 422),
        ("from=2020-01-01&to=2026-10-01", 422),
        (days_around_now() + "&station=NOPE", 404),
    ):
        status, _, body = await fetch(cpo, f"{CDRS}?{query}")
        assert status == status_code, (query, body)
        assert json.loads(body)["status"] == "error"
    assert (await fetch(cpo, f"{CDRS}?{days_around_now()}", auth=False))[0] == 401

    # the web interface: a button on the exports page, the download for a viewer
    web = WebClient(cpo.http_url)
    try:
        assert (await web.login(VIEWER)).status == 303
        status, page = await web.get("/exports")
        assert status == 200 and 'formaction="/exports/cdrs.csv"' in page
        assert "Descarregar CDRs (CSV)" in page
        async with web.http.get(f"{cpo.http_url}/exports/cdrs.csv?{days_around_now()}") as r:
            assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
            web_rows: list[dict[str, Any]] = rows_of(await r.read())
        assert sorted(r["session_id"] for r in web_rows) == sorted([str(tx1), str(tx2)])
        status, page = await web.get("/exports/cdrs.csv?from=2026-10-02&to=2026-10-01")
        assert status == 422 and "to must be after from" in page
    finally:
        await web.close()


def test_peer_text_in_a_cdr_cannot_become_a_formula() -> None:
    """What a peer supplied (a token's contract id, a location's text) is written inert."""
    from csms.exports import cell, parse_filter

    f = parse_filter({"from": "2026-10-01", "to": "2026-11-01"}, "Europe/Lisbon")
    row = cdr_row(
        {
            "id": "7",
            "cdr_token": {"uid": "@A1", "contract_id": '=HYPERLINK("http://x")', "type": "RFID"},
            "cdr_location": {"id": "+LOC", "evse_uid": "\tE", "evse_id": "\rE"},
            "total_energy": 1e-05,
            "total_cost": {"excl_vat": -0.5},
        },
        "-ST",
        "2026-10-25T00:30:00.000Z",
        False,
        None,
    )
    cells = dict(zip(CDR_COLUMNS, [cell(v, f) for v in row], strict=True))
    assert cells["contract_id"] == '\'=HYPERLINK("http://x")'
    assert cells["token_uid"] == "'@A1" and cells["location_id"] == "'+LOC"
    assert cells["evse_uid"] == "'\tE" and cells["evse_id"] == "'\rE"
    assert cells["station_id"] == "'-ST"
    # numbers stay numbers: never scientific notation, a negative one not quoted
    assert cells["energy_kwh"] == "0.00001" and cells["total_cost_excl_vat"] == "-0.5"
    assert cells["issued_at"] == "2026-10-25T01:30:00+01:00"
    assert cells["hub_acknowledged"] == "" and cells["hub_acknowledged_at"] == ""
