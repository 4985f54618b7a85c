"""Ad hoc charging with the Stripe provider, end to end over real sockets (issue 17): csms,
a simulated station, a driver (HTTP client with cookies) and the local stand-in of Stripe's
API (tests/stripe_standin.py, with its hosted payment page and its signed webhooks).

Pay on Stripe's page, charge, stop, capture exactly the price once; a declined card; a
driver who never pays (the payment window, on an injected clock); webhooks replayed,
forged, stale or for another account; a capture whose answer is lost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from csms.clock import FakeClock
from tests.stripe_standin import StripeStandin
from tests.test_adhoc import EVSE, Site, close, csrf_of, driver, live, open_site, state_is
from tests.test_push_faults import eventually


@dataclass
class StripeSite:
    site: Site
    stripe: StripeStandin

    @property
    def base(self) -> str:
        return self.site.cpo.http_url


async def open_stripe_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock | None = None
) -> StripeSite:
    # Stripe's clock is csms's: the webhooks' signed timestamps must be "now" for csms
    standin = StripeStandin(clock=lambda: clock.now().timestamp()) if clock else StripeStandin()
    await standin.start()
    monkeypatch.setenv("CSMS_ADHOC_STRIPE_SECRET_KEY", standin.secret_key)
    monkeypatch.setenv("CSMS_ADHOC_STRIPE_WEBHOOK_SECRET", standin.webhook_secret)
    site = await open_site(
        tmp_path,
        clock=clock,
        adhoc={"provider": "stripe", "stripe": {"api_base": standin.url}},
    )
    standin.webhook_url = f"{site.cpo.http_url}/charge/webhooks/stripe"
    return StripeSite(site, standin)


@pytest.fixture
async def stripe_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StripeSite]:
    s = await open_stripe_site(tmp_path, monkeypatch)
    try:
        yield s
    finally:
        await close(s.site)
        await s.stripe.stop()


async def start_paying(s: StripeSite, d: aiohttp.ClientSession) -> tuple[str, str]:
    """The driver opens the EVSE page and presses pay: sent to Stripe's hosted page.
    (payment id, checkout session id)."""
    async with d.get(f"{s.base}/charge/{EVSE}?lang=en") as r:
        assert r.status == 200
        html = await r.text()
    form = {"csrf": csrf_of(html), "lang": "en", "email": ""}
    async with d.post(f"{s.base}/charge/{EVSE}", data=form, allow_redirects=False) as r:
        assert r.status == 303, await r.text()
        where = r.headers["Location"]
    assert where.startswith(f"{s.stripe.url}/pay/cs_"), where
    sid = where.rsplit("/", 1)[1]
    session = s.stripe.sessions[sid]
    pid = session["metadata"]["payment_id"]
    assert session["amount_total"] == 3000 and session["currency"] == "eur"
    # the hold is authorised only: captured later, for the price
    assert session["_intent_data"]["capture_method"] == "manual"
    return pid, sid


async def confirm(s: StripeSite, d: aiohttp.ClientSession, sid: str) -> aiohttp.ClientResponse:
    async with d.post(
        f"{s.stripe.url}/pay/{sid}/confirm", data={"method": "card"}, allow_redirects=False
    ) as r:
        await r.read()
        return r


async def charge_and_stop(s: StripeSite, d: aiohttp.ClientSession, pid: str) -> None:
    site = s.site
    await state_is(site, d, pid, "charging")
    conn = site.station.connectors[1]
    await asyncio.sleep(1.1)  # (a sample in the start's second is the start's)
    await site.station.meter_values(1, energy_wh=conn.meter_wh + 5000, power_w=7400)

    async def priced() -> bool:
        return (await live(site, d, pid)).get("energy_wh") == 5000

    await eventually(priced)
    async with d.get(f"{s.base}/charge/s/{pid}") as r:
        page = await r.text()
    async with d.post(
        f"{s.base}/charge/s/{pid}/stop", data={"csrf": csrf_of(page)}, allow_redirects=False
    ) as r:
        assert r.status == 303


async def test_pay_at_stripe_charge_capture_the_price_once(stripe_site: StripeSite) -> None:
    s = stripe_site
    async with driver() as d:
        pid, sid = await start_paying(s, d)
        # nothing starts before the driver pays
        await s.site.run()
        assert (await live(s.site, d, pid))["state"] == "pending"
        assert s.site.station.connectors[1].transaction_id is None
        r = await confirm(s, d, sid)
        # Stripe sends the driver back to csms's page of that payment
        assert r.status == 303
        assert r.headers["Location"] == f"{s.base}/charge/s/{pid}?paid=1"
        await s.stripe.drain()
        await charge_and_stop(s, d, pid)
        await state_is(s.site, d, pid, "captured")
        done = await live(s.site, d, pid)
    # 1.00 + 5 kWh x 0.30 = 2.50 excl. VAT, 3.08 incl.: captured once, the rest released
    [(intent_id, amount)] = s.stripe.captures
    assert amount == 308 and done["captured_amount"] == 308
    intent = s.stripe.intents[intent_id]
    assert intent["status"] == "succeeded" and intent["amount_received"] == 308
    assert s.stripe.charges[intent["latest_charge"]]["amount_refunded"] == 3000 - 308
    # every call that changes something carried an idempotency key
    for method, path, key in s.stripe.requests:
        if method == "POST":
            assert key, path
    # the operator sees it, with the receipt
    status, body = await s.site.cpo.api.get(f"/api/v1/adhoc/payments/{pid}")
    assert status == 200 and body["state"] == "captured" and body["provider"] == "stripe"
    assert body["receipt_number"] == 1
    # the webhooks were all accepted (the completed session woke the worker)
    await s.stripe.drain()
    assert s.stripe.deliveries and all(x.status == 200 for x in s.stripe.deliveries)
    # more work by the worker changes nothing
    await s.site.run()
    assert len(s.stripe.captures) == 1


async def test_declined_card_then_gone_releases_the_evse(stripe_site: StripeSite) -> None:
    s = stripe_site
    async with driver() as d:
        pid, sid = await start_paying(s, d)
        s.stripe.decline_next()
        r = await confirm(s, d, sid)
        assert r.status == 402  # Stripe's page says the card was declined
        await s.stripe.drain()
        await s.site.run()
        # the driver may try another card: the EVSE is still theirs
        assert (await live(s.site, d, pid))["state"] == "pending"
        async with d.get(f"{s.base}/charge/{EVSE}?lang=en") as r:
            assert "Pay and charge" not in await r.text()
        # they give up; Stripe expires the session (its webhook wakes csms)
        s.stripe.expire_session(sid)
        await s.stripe.drain()
        await state_is(s.site, d, pid, "released")
        assert (await live(s.site, d, pid))["reason"] == "declined"
        async with d.get(f"{s.base}/charge/{EVSE}?lang=en") as r:
            assert "Pay and charge" in await r.text()
    assert s.stripe.captures == []
    assert s.site.station.connectors[1].transaction_id is None


async def test_a_driver_who_never_pays_frees_the_evse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    s = await open_stripe_site(tmp_path, monkeypatch, clock)
    try:
        async with driver() as d:
            pid, sid = await start_paying(s, d)
            await clock.advance(599)
            await s.site.run()
            assert (await live(s.site, d, pid))["state"] == "pending"
            await clock.advance(2)  # the payment window (600 s) is over
            await s.site.run()
            assert (await live(s.site, d, pid))["state"] == "released"
            # csms expired Stripe's session: a late payment cannot go through
            assert s.stripe.sessions[sid]["status"] == "expired"
            r = await confirm(s, d, sid)
            assert r.status == 410
    finally:
        await close(s.site)
        await s.stripe.stop()
    assert s.stripe.captures == []


async def post_webhook(s: StripeSite, body: bytes, signature: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as c:
        async with c.post(
            f"{s.base}/charge/webhooks/stripe",
            data=body,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
        ) as r:
            return r.status, await r.json()


async def test_webhooks_are_verified_and_replay_safe(stripe_site: StripeSite) -> None:
    s = stripe_site
    async with driver() as d:
        pid, sid = await start_paying(s, d)
        assert (await confirm(s, d, sid)).status == 303
        await s.stripe.drain()
        await state_is(s.site, d, pid, "charging")
    [completed] = [e for e in s.stripe.events if e["type"] == "checkout.session.completed"]
    body = json.dumps(completed).encode()
    now = int(s.stripe.clock())
    # the same event again, signed again: applied once, the second is a replay
    status, answer = await post_webhook(s, body, s.stripe.sign(body, now))
    assert (status, answer["outcome"]) == (200, "replay")
    # the stand-in's own replay of the same bytes and signature
    assert await s.stripe.resend(completed["id"]) == 200
    # forged: signed with another secret
    forged = StripeStandin(webhook_secret="whsec_" + "0" * 32).sign(body, now)
    status, answer = await post_webhook(s, body, forged)
    assert status == 400 and "signature" in answer["error"].lower()
    # stale: a signature from an hour ago (a recorded request played back)
    status, answer = await post_webhook(s, body, s.stripe.sign(body, now - 3600))
    assert status == 400
    # a changed body under a valid signature
    tampered = body.replace(b'"complete"', b'"open"')
    status, answer = await post_webhook(s, tampered, s.stripe.sign(body, now))
    assert status == 400
    # not JSON, no header, an unknown provider
    status, _ = await post_webhook(s, b"\xff\x00", s.stripe.sign(b"\xff\x00", now))
    assert status == 400
    async with aiohttp.ClientSession() as c:
        async with c.post(f"{s.base}/charge/webhooks/stripe", data=body) as r:
            assert r.status == 400
        async with c.post(f"{s.base}/charge/webhooks/paypal", data=body) as r:
            assert r.status == 404
    # nothing of it moved the payment or charged anything
    async with driver() as d:
        assert (await live(s.site, d, pid))["state"] == "charging"
    assert s.stripe.captures == []


async def test_a_capture_whose_answer_is_lost_is_not_made_twice(
    stripe_site: StripeSite,
) -> None:
    s = stripe_site
    async with driver() as d:
        pid, sid = await start_paying(s, d)
        assert (await confirm(s, d, sid)).status == 303
        await s.stripe.drain()
        # Stripe captures, but the answer never reaches csms: csms tries again (with the
        # same idempotency key, after reading what Stripe holds)
        s.stripe.fail_next("/v1/payment_intents/", 500, after_execution=True)
        await charge_and_stop(s, d, pid)

        async def captured() -> bool:
            await s.site.run()
            return (await live(s.site, d, pid))["state"] == "captured"

        await eventually(captured, timeout=30)
    assert s.stripe.failures_left() == 0  # the answer was lost indeed
    assert [amount for _, amount in s.stripe.captures] == [308]
    keys = {k for m, p, k in s.stripe.requests if p.endswith("/capture")}
    assert len(keys) == 1, keys


async def test_the_driver_cancels_and_the_evse_is_free_at_once(stripe_site: StripeSite) -> None:
    s = stripe_site
    async with driver() as d:
        pid, sid = await start_paying(s, d)
        # back from Stripe's page without paying
        async with d.post(f"{s.stripe.url}/pay/{sid}/cancel", allow_redirects=False) as r:
            assert r.status == 303
            back = r.headers["Location"]
        assert back == f"{s.base}/charge/s/{pid}?cancelled=1"
        async with d.get(back) as r:
            page = await r.text()
        assert "Payment cancelled." in page and 'id="cancel"' in page
        async with d.post(
            f"{s.base}/charge/s/{pid}/cancel", data={"csrf": csrf_of(page)}, allow_redirects=False
        ) as r:
            assert r.status == 303
        await state_is(s.site, d, pid, "released")
        assert (await live(s.site, d, pid))["reason"] == "cancelled"
        # Stripe's session is expired: paying late cannot hold anything
        assert s.stripe.sessions[sid]["status"] == "expired"
        async with d.get(f"{s.base}/charge/{EVSE}?lang=en") as r:
            assert "Pay and charge" in await r.text()
        # a cancel without the form's token is refused
        async with d.post(f"{s.base}/charge/s/{pid}/cancel", data={}) as r:
            assert r.status == 400
    assert s.stripe.captures == []
