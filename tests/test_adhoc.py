"""Ad hoc charging end to end over real sockets (issue 17), with the ``manual`` provider
(the Stripe provider's flow is tests/test_adhoc_stripe_e2e.py): the public EVSE page and
its price, pay, start, live view, stop, capture, receipt; each failure path (station
refuses, offline, never starts, two drivers racing); the cost reaching the hold; hostile
requests; the operator's API; the price messages to a station that shows them.

The driver is a plain HTTP client here (cookies, forms, redirects); the browser test is
tests/test_adhoc_browser.py."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email import message_from_bytes
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from charger_sim import Behaviour, Station
from csms.clock import FakeClock
from tests.conftest import Running, start_system, station_body
from tests.test_alerts import SmtpSink
from tests.test_push_faults import eventually

AD_HOC = {
    "currency": "EUR",
    "type": "AD_HOC_PAYMENT",
    "elements": [
        {
            "price_components": [
                {"type": "FLAT", "price": 1.0, "vat": 23, "step_size": 1},
                {"type": "ENERGY", "price": 0.3, "vat": 23, "step_size": 1},
            ]
        }
    ],
}
REGULAR = {
    "currency": "EUR",
    "elements": [{"price_components": [{"type": "ENERGY", "price": 0.2, "step_size": 1}]}],
}
STATION = "AH1"
EVSE = f"LOC-{STATION}-01"


@dataclass
class Site:
    cpo: Running
    system: Any
    session: aiohttp.ClientSession
    station: Station
    service: Any

    async def run(self) -> None:
        await self.service.run_once()


def driver() -> aiohttp.ClientSession:
    # a phone's browser: keeps cookies (of an IP address host too)
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:2000]
    return m.group(1)


async def open_site(
    tmp_path: Path,
    *,
    clock: FakeClock | None = None,
    behaviour: Behaviour | None = None,
    adhoc: dict[str, Any] | None = None,
    cost_display: bool = False,
    **overrides: Any,
) -> Site:
    system, session, cpo = await start_system(
        tmp_path,
        clock=clock,
        ocpi={},
        adhoc={"poll_interval": 0.2, "public_rate_limit": 100000, **(adhoc or {})},
        **overrides,
    )
    assert (await cpo.api.put("/api/v1/tariffs/ADHOC", AD_HOC))[0] == 201
    assert (await cpo.api.put("/api/v1/tariffs/REG", REGULAR))[0] == 201
    body = station_body(STATION, 2)
    for evse in body["evses"]:
        evse["connectors"][0]["tariff_ids"] = ["REG", "ADHOC"]
    status, answer = await cpo.api.put(f"/api/v1/stations/{STATION}", body)
    assert status in (200, 201), answer
    st = Station(
        STATION,
        cpo.ocpp_url,
        2,
        cost_display=cost_display,
        behaviour=behaviour
        or Behaviour(
            auto_heartbeat=False,
            auto_meter_values=False,
            charge_power_w=0.0,
            step_delay=0.02,
        ),
    )
    await st.connect()
    await st.boot_and_report()
    ext = next(e for e in system.extensions if e.name == "adhoc")
    return Site(cpo, system, session, st, ext.service)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = await open_site(tmp_path)
    yield s
    await close(s)


async def close(s: Site) -> None:
    await s.station.disconnect()
    await s.session.close()
    await s.system.stop()


async def pay(s: Site, d: aiohttp.ClientSession, email: str | None = None) -> tuple[int, str]:
    """The driver opens the EVSE page and pays: (status, where it was sent)."""
    base = s.cpo.http_url
    async with d.get(f"{base}/charge/{EVSE}?lang=en") as r:
        assert r.status == 200
        html = await r.text()
    form = {"csrf": csrf_of(html), "lang": "en", "email": email or ""}
    async with d.post(f"{base}/charge/{EVSE}", data=form, allow_redirects=False) as r:
        return r.status, r.headers.get("Location", "")


async def live(s: Site, d: aiohttp.ClientSession, pid: str) -> dict[str, Any]:
    async with d.get(f"{s.cpo.http_url}/charge/s/{pid}/live") as r:
        assert r.status == 200
        return await r.json()


async def state_is(s: Site, d: aiohttp.ClientSession, pid: str, state: str) -> None:
    async def check() -> bool:
        return (await live(s, d, pid))["state"] == state

    await eventually(check, timeout=15)


# ---------------------------------------------------------------------------- the happy path


async def test_scan_pay_charge_stop_receipt(site: Site) -> None:
    s, base = site, site.cpo.http_url
    async with driver() as d:
        async with d.get(f"{base}/charge/{EVSE}?lang=pt") as r:
            assert r.status == 200
            html = await r.text()
        assert "Livre" in html and "PT*MOB*EAH1*1" in html
        # the ad hoc tariff in full (not the regular one): incl. VAT and excl. VAT
        assert "0,369 €" in html and "0,30 €" in html and "1,23 €" in html
        assert "com IVA (23%)" in html and "30,00 €" in html  # the hold
        assert "Content-Security-Policy" in r.headers

        status, where = await pay(s, d, email=None)
        assert status == 303 and where.startswith("/charge/s/"), (status, where)
        pid = where.rsplit("/", 1)[1]
        await state_is(s, d, pid, "charging")
        st = s.station
        conn = st.connectors[1]
        assert conn.transaction_id is not None and conn.id_tag and conn.id_tag.startswith("AH")
        # the station reports energy; the page shows it and the cost so far
        await asyncio.sleep(1.1)  # (a sample in the start's second is the start's)
        await st.meter_values(1, energy_wh=conn.meter_wh + 5000, power_w=7400)

        async def priced() -> bool:
            return (await live(s, d, pid)).get("energy_wh") == 5000

        await eventually(priced)
        now = await live(s, d, pid)
        # 1.00 + 5 kWh x 0.30 = 2.50 excl.; x 1.23 = 3.075 -> 3.08 incl. VAT
        assert now["cost_minor"] == 308, now
        async with d.get(f"{base}/charge/s/{pid}") as r:
            page = await r.text()
        assert 'id="stop"' in page and "Charging" in page  # the payment's language (en)
        async with d.post(
            f"{base}/charge/s/{pid}/stop", data={"csrf": csrf_of(page)}, allow_redirects=False
        ) as r:
            assert r.status == 303
        await state_is(s, d, pid, "captured")
        done = await live(s, d, pid)
        assert done["captured_amount"] == 308 and done["receipt_number"] == 1
        async with d.get(f"{base}/charge/s/{pid}") as r:
            page = await r.text()
        assert "AH-000001" in page and "Operador de Teste Lda" in page
        async with d.get(f"{base}/charge/s/{pid}/receipt.pdf") as r:
            assert r.status == 200 and (await r.read()).startswith(b"%PDF")
        # the EVSE is free again, for anyone
        async with d.get(f"{base}/charge/{EVSE}?lang=en") as r:
            assert "Pay and charge" in await r.text()

    # the operator sees the payment, what was released, and the receipt
    status, body = await s.cpo.api.get("/api/v1/adhoc/payments")
    assert status == 200 and body["total"] == 1
    p = body["items"][0]
    assert (p["state"], p["hold_amount"], p["captured_amount"], p["released_amount"]) == (
        "captured",
        3000,
        308,
        2692,
    )
    assert p["receipt_number"] == 1 and p["email_given"] is False
    status, body = await s.cpo.api.get("/api/v1/adhoc/receipts/1")
    assert status == 200 and body["body"]["total_incl_vat"].startswith("3.07")
    # the transaction is ad hoc for the OCPI bridge: its Session's token is AD_HOC_USER
    sessions = await s.system.extensions[1].bridge.sessions.list_sessions(
        None, None, None, 0, 10, "2.2.1"
    )
    assert sessions[0][0]["cdr_token"]["type"] == "AD_HOC_USER"


# ---------------------------------------------------------------------------- failures


async def test_station_refuses_the_start(tmp_path: Path) -> None:
    s = await open_site(
        tmp_path,
        behaviour=Behaviour(
            auto_heartbeat=False, auto_meter_values=False, remote_start="reject", step_delay=0.02
        ),
    )
    try:
        async with driver() as d:
            status, where = await pay(s, d)
            pid = where.rsplit("/", 1)[1]
            await state_is(s, d, pid, "released")
            assert (await live(s, d, pid))["reason"] == "station_refused"
            async with d.get(f"{s.cpo.http_url}/charge/s/{pid}") as r:
                assert "refused to start" in await r.text()
            assert s.station.connectors[1].transaction_id is None
            # the EVSE can be paid for again
            status, _ = await pay(s, d)
            assert status == 303
    finally:
        await close(s)


async def test_station_offline_releases(tmp_path: Path) -> None:
    clock = FakeClock()
    s = await open_site(tmp_path, clock=clock)
    try:
        await s.station.disconnect()  # seen a moment ago: the page still offers it
        await eventually(lambda: not s.system.port.is_connected(STATION))
        async with driver() as d:
            status, where = await pay(s, d)
            assert status == 303
            pid = where.rsplit("/", 1)[1]
            await s.run()
            # it may be back in a moment (a csms restart, a network blip): the start waits
            await state_is(s, d, pid, "authorized")
            await clock.advance(179)
            await s.run()
            await state_is(s, d, pid, "authorized")
            await clock.advance(2)  # start_timeout (180 s) is over
            await s.run()
            await state_is(s, d, pid, "released")
            assert (await live(s, d, pid))["reason"] == "station_offline"
    finally:
        await close(s)


async def test_station_never_starts_then_the_tag_is_refused(tmp_path: Path) -> None:
    clock = FakeClock(datetime.now(UTC))
    s = await open_site(
        tmp_path,
        clock=clock,
        behaviour=Behaviour(
            auto_heartbeat=False,
            auto_meter_values=False,
            remote_start="accept_no_tx",
            step_delay=0.02,
        ),
    )
    try:
        async with driver() as d:
            _, where = await pay(s, d)
            pid = where.rsplit("/", 1)[1]
            await state_is(s, d, pid, "starting")
            tag = (await s.service.store.get(pid))["id_tag"]
            assert (await s.station.authorize(tag))["idTagInfo"]["status"] == "Accepted"
            await clock.advance(179)
            await s.run()
            assert (await live(s, d, pid))["state"] == "starting"
            await clock.advance(2)
            await s.run()
            got = await live(s, d, pid)
            assert (got["state"], got["reason"]) == ("released", "start_timeout")
            # a late start with that tag is refused (the station stops it)
            assert (await s.station.authorize(tag))["idTagInfo"]["status"] == "Invalid"
    finally:
        await close(s)


async def test_two_drivers_race_for_one_evse(site: Site) -> None:
    s, base = site, site.cpo.http_url
    async with driver() as a, driver() as b:
        forms = []
        for d in (a, b):
            async with d.get(f"{base}/charge/{EVSE}?lang=en") as r:
                forms.append({"csrf": csrf_of(await r.text()), "lang": "en"})

        async def post(d: aiohttp.ClientSession, form: dict[str, str]) -> tuple[int, str]:
            async with d.post(f"{base}/charge/{EVSE}", data=form, allow_redirects=False) as r:
                return r.status, await r.text()

        results = await asyncio.gather(post(a, forms[0]), post(b, forms[1]))
        assert sorted(r[0] for r in results) == [303, 409], results
        loser = next(r for r in results if r[0] == 409)
        assert "Another driver is paying" in loser[1]
    _, body = await s.cpo.api.get("/api/v1/adhoc/payments")
    assert body["total"] == 1  # the loser's hold was never asked for


async def test_the_charge_stops_at_the_hold(tmp_path: Path) -> None:
    s = await open_site(tmp_path, adhoc={"hold_amount": "5.00"})
    try:
        async with driver() as d:
            _, where = await pay(s, d)
            pid = where.rsplit("/", 1)[1]
            await state_is(s, d, pid, "charging")
            conn = s.station.connectors[1]
            await asyncio.sleep(1.1)
            # 1.00 + 20 kWh x 0.30 = 7.00 excl. -> 8.61 incl.: above the 5.00 held
            await s.station.meter_values(1, energy_wh=conn.meter_wh + 20000, power_w=7400)
            await state_is(s, d, pid, "captured")  # stopped by csms, captured at the hold
            got = await live(s, d, pid)
            assert got["captured_amount"] == 500
        assert s.station.connectors[1].transaction_id is None
    finally:
        await close(s)


# ---------------------------------------------------------------------------- hostile input


async def test_public_pages_refuse_and_reveal_nothing(tmp_path: Path) -> None:
    s = await open_site(tmp_path, adhoc={"public_rate_limit": 12})
    base = s.cpo.http_url
    try:
        async with driver() as d:
            async with d.get(f"{base}/charge/NOPE?lang=en") as r:
                assert r.status == 404 and "does not exist" in await r.text()
            async with d.get(f"{base}/charge/{'X' * 500}") as r:
                assert r.status == 404
            async with d.get(f"{base}/charge/s/{'A' * 22}") as r:
                assert r.status == 404  # no one's payment
            async with d.get(f"{base}/charge/s/{'A' * 22}/live") as r:
                assert r.status == 404
            async with d.post(f"{base}/charge/{EVSE}", data={"csrf": "forged"}) as r:
                assert r.status == 400  # no matching cookie: another site's form
            async with d.get(f"{base}/charge/{EVSE}?lang=en") as r:
                token = csrf_of(await r.text())
            async with d.post(
                f"{base}/charge/{EVSE}",
                data={"csrf": token, "email": "not an address", "lang": "en"},
            ) as r:
                assert r.status == 400 and "not valid" in await r.text()
            async with d.post(f"{base}/charge/webhooks/stripe", data=b"{}") as r:
                assert r.status == 404  # not this installation's provider
            async with d.post(f"{base}/charge/webhooks/manual", data=b"{}") as r:
                assert r.status == 400
            # the limit: 12 a minute from one address, then 429 with Retry-After
            codes = []
            for _ in range(12):
                async with d.get(f"{base}/charge/{EVSE}") as r:
                    codes.append(r.status)
                    retry = r.headers.get("Retry-After")
            assert codes[-1] == 429 and retry == "60", codes
        # the driver's page of someone else's payment needs its 128-bit id: nothing lists
        # them publicly, and the EVSE page says only free or not
    finally:
        await close(s)


# ---------------------------------------------------------------------------- price display


async def test_price_messages_to_a_station_that_shows_them(tmp_path: Path) -> None:
    s = await open_site(
        tmp_path,
        behaviour=Behaviour(
            auto_heartbeat=False,
            auto_meter_values=False,
            charge_power_w=0.0,
            step_delay=0.02,
        ),
        adhoc={"running_cost_interval": 5},
        cost_display=True,
    )
    try:
        status, body = await s.cpo.api.put(f"/api/v1/adhoc/stations/{STATION}", {"costmsg": True})
        assert status == 200, body
        status, body = await s.cpo.api.put("/api/v1/adhoc/stations/NOPE", {"costmsg": True})
        assert status == 404
        status, body = await s.cpo.api.put(f"/api/v1/adhoc/stations/{STATION}", {"costmsg": 1})
        assert status == 422
        async with driver() as d:
            _, where = await pay(s, d)
            pid = where.rsplit("/", 1)[1]
            await state_is(s, d, pid, "charging")
            conn = s.station.connectors[1]
            await asyncio.sleep(1.1)
            await s.station.meter_values(1, energy_wh=conn.meter_wh + 2000, power_w=7400)
            await eventually(
                lambda: any(m[0] == "RunningCost" for m in s.station.cost_messages), timeout=15
            )
            await s.service.stop_requested(pid)
            await state_is(s, d, pid, "captured")
            await eventually(
                lambda: any(m[0] == "FinalCost" for m in s.station.cost_messages), timeout=15
            )
        kinds = [m[0] for m in s.station.cost_messages]
        assert kinds[0] == "SetUserPrice", kinds
        final = next(m[1] for m in s.station.cost_messages if m[0] == "FinalCost")
        # 1.00 + 2 kWh x 0.30 = 1.60 excl. -> 1.968 -> 1.97 incl.
        assert final["cost"] == Decimal("1.97"), final
    finally:
        await close(s)


async def test_a_station_with_its_own_card_terminal(tmp_path: Path) -> None:
    """The terminal took the money: csms recognises its tags, prices the charge with the
    ad hoc tariff, receipts it, and reports it to MOBI.E as AD_HOC_USER."""
    s = await open_site(
        tmp_path,
        adhoc={"terminals": [{"station": STATION, "id_tag_pattern": "^CARD[0-9]{4}$"}]},
    )
    try:
        st = s.station
        # a tag of the terminal's pattern is accepted without a token list...
        assert (await st.authorize("CARD1234"))["idTagInfo"]["status"] == "Accepted"
        # ... on that station only, and only of that pattern
        assert (await st.authorize("CARD12345"))["idTagInfo"]["status"] != "Accepted"
        answer = await st.start_transaction(2, "CARD1234")
        assert answer is not None and answer["idTagInfo"]["status"] == "Accepted"
        tx = answer["transactionId"]
        await asyncio.sleep(1.1)
        await st.meter_values(2, energy_wh=st.connectors[2].meter_wh + 10000, power_w=50000)
        await st.stop_transaction(tx, meter_stop=int(st.connectors[2].meter_wh))

        async def receipted() -> bool:
            await s.run()
            _, body = await s.cpo.api.get("/api/v1/adhoc/payments?state=captured")
            return body["total"] == 1

        await eventually(receipted, timeout=15)
        _, body = await s.cpo.api.get("/api/v1/adhoc/payments")
        [p] = body["items"]
        # 1.00 + 10 kWh x 0.30 = 4.00 excl. VAT, 4.92 incl.: not capped by any hold
        assert p["kind"] == "terminal" and p["station_id"] == STATION
        assert p["captured_amount"] == 492 and p["transaction_id"] == tx
        status, receipts = await s.cpo.api.get("/api/v1/adhoc/receipts")
        assert status == 200 and receipts["total"] == 1
        number = receipts["items"][0]["number"]
        status, receipt = await s.cpo.api.get(f"/api/v1/adhoc/receipts/{number}")
        assert status == 200 and receipt["number"] == number, receipt
        body = receipt["body"]
        assert body["amount_captured"] == 492 and body["energy_wh"] == 10000, body
        assert body["payment_method"] == "terminal" and body["transaction_id"] == tx
        # the same tag on another station is nobody's
        assert (await s.cpo.api.put("/api/v1/stations/AH2", station_body("AH2", 1)))[0] == 201
        other = Station("AH2", s.cpo.ocpp_url, 1, behaviour=Behaviour(auto_heartbeat=False))
        await other.connect()
        try:
            await other.boot_and_report()
            assert (await other.authorize("CARD1234"))["idTagInfo"]["status"] != "Accepted"
        finally:
            await other.disconnect()
    finally:
        await close(s)


async def test_the_receipt_by_e_mail(tmp_path: Path) -> None:
    async with SmtpSink() as smtp:
        s = await open_site(
            tmp_path,
            ALERTS__SMTP_HOST='"127.0.0.1"',
            ALERTS__SMTP_PORT=str(smtp.port),
            ALERTS__SMTP_FROM='"recibos@cpo.example.pt"',
            ALERTS__SMTP_TO='["ops@cpo.example.pt"]',
            ALERTS__SMTP_STARTTLS="false",
        )
        try:
            async with driver() as d:
                # an address that is not one is refused before anything is held
                async with d.get(f"{s.cpo.http_url}/charge/{EVSE}?lang=pt") as r:
                    token = csrf_of(await r.text())
                async with d.post(
                    f"{s.cpo.http_url}/charge/{EVSE}",
                    data={"csrf": token, "email": "a@b\r\nBcc: x@y.z", "lang": "pt"},
                    allow_redirects=False,
                ) as r:
                    assert r.status == 400
                _, where = await pay(s, d, email="condutor@example.pt")
                pid = where.rsplit("/", 1)[1]
                await state_is(s, d, pid, "charging")
                assert await s.service.stop_requested(pid)
                await state_is(s, d, pid, "captured")

            def receipts() -> list[Any]:
                mails = [message_from_bytes(m) for m in smtp.messages]
                return [m for m in mails if m["To"] != "ops@cpo.example.pt"]  # not alerts

            await eventually(receipts, timeout=15)
            [mail] = receipts()
            assert mail["To"] == "condutor@example.pt"
            assert mail["From"] == "recibos@cpo.example.pt"
            assert "Operador de Teste Lda" in mail["Subject"]
            parts = {p.get_content_type(): p for p in mail.walk()}
            assert "AH-000001" in parts["text/plain"].get_payload(decode=True).decode()
            pdf = parts["application/pdf"].get_payload(decode=True)
            assert pdf.startswith(b"%PDF")

            async def recorded() -> bool:
                _, body = await s.cpo.api.get("/api/v1/adhoc/receipts/1")
                return body["emailed_at"] is not None and body["email_error"] is None

            await eventually(recorded)
            # the operator's list does not show the driver's address
            _, body = await s.cpo.api.get(f"/api/v1/adhoc/payments/{pid}")
            assert body["email_given"] is True and "condutor" not in json.dumps(body)
        finally:
            await close(s)
