"""The ``stripe`` provider against the Stripe stand-in (tests/stripe_standin.py), over real
HTTP on 127.0.0.1: holds confirmed on the hosted page, captures, releases, errors, webhooks
and secrets kept out of logs."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from adhoc.providers.base import (
    HoldRequest,
    HoldStatus,
    ProviderError,
    WebhookEvent,
    WebhookRejected,
)
from adhoc.providers.stripe import (
    SECRET_KEY_ENV,
    WEBHOOK_SECRET_ENV,
    StripeProvider,
    StripeSettings,
)
from csms.ports import ConfigError
from tests.stripe_standin import StripeStandin, decode_params

RETURN = "https://charge.example.pt/p/abc/done"
CANCEL = "https://charge.example.pt/p/abc/cancel"


class Receiver:
    """The operator's webhook endpoint: records what Stripe POSTs."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/webhook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), dict(request.headers)))
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def standin(receiver: Receiver) -> AsyncIterator[StripeStandin]:
    s = StripeStandin()
    await s.start()
    s.webhook_url = receiver.url
    try:
        yield s
    finally:
        await s.stop()


def settings_for(standin: StripeStandin, **kw: Any) -> StripeSettings:
    values: dict[str, Any] = {
        "secret_key": SecretStr(standin.secret_key),
        "webhook_secret": SecretStr(standin.webhook_secret),
        "api_base": standin.url,
        "max_network_retries": 0,
        "timeout": 5,
    }
    values.update(kw)
    return StripeSettings(**values)


@pytest.fixture
async def provider(standin: StripeStandin) -> AsyncIterator[StripeProvider]:
    p = StripeProvider(settings_for(standin))
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def request(payment_id: str = "pay_0001", amount: int = 3000, **kw: Any) -> HoldRequest:
    values: dict[str, Any] = {
        "payment_id": payment_id,
        "amount": amount,
        "currency": "EUR",
        "description": "Carregamento em LSB-00175-01",
        "email": "driver@example.pt",
        "return_url": RETURN,
        "cancel_url": CANCEL,
        "language": "pt",
    }
    values.update(kw)
    return HoldRequest(**values)


async def press(http: aiohttp.ClientSession, page_url: str, button: str) -> aiohttp.ClientResponse:
    """What a driver's browser does: open the hosted page and submit the form of the button
    named ``button`` (no redirect followed: the answer is returned)."""
    async with http.get(page_url) as resp:
        assert resp.status == 200, resp.status
        page = await resp.text()
    forms = re.findall(r'<form method="post" action="([^"]+)">(.*?)</form>', page, re.S)
    action = next(a for a, inner in forms if f">{button}</button>" in inner)
    origin = re.match(r"^https?://[^/]+", page_url)
    assert origin is not None
    resp = await http.post(origin.group(0) + action, data={}, allow_redirects=False)
    await resp.read()
    return resp


async def pay(http: aiohttp.ClientSession, page_url: str) -> None:
    resp = await press(http, page_url, "Pay")
    assert resp.status == 303
    assert resp.headers["Location"] == RETURN


def now() -> datetime:
    return datetime.now(UTC)


# -- holds, captures, releases ---------------------------------------------------------


async def test_hold_pay_capture_part_releases_the_rest(
    provider: StripeProvider, standin: StripeStandin, http: aiohttp.ClientSession
) -> None:
    hold = await provider.create_hold(request(methods=("card", "link")))
    assert hold.status == HoldStatus.PENDING
    assert hold.reference.startswith("cs_")
    assert hold.redirect_url == f"{standin.url}/pay/{hold.reference}"
    # what Stripe was asked
    session = standin.sessions[hold.reference]
    assert session["amount_total"] == 3000 and session["currency"] == "eur"
    assert session["_intent_data"] == {
        "capture_method": "manual",
        "description": "Carregamento em LSB-00175-01",
        "metadata": {"payment_id": "pay_0001"},
    }
    assert session["client_reference_id"] == "pay_0001"
    assert session["customer_email"] == "driver@example.pt"
    assert session["locale"] == "pt"
    assert session["payment_method_types"] == ["card", "link"]
    assert (session["success_url"], session["cancel_url"]) == (RETURN, CANCEL)
    assert ("POST", "/v1/checkout/sessions", "hold-pay_0001") in standin.requests
    assert all(v.startswith("20") for v in standin.versions)  # Stripe-Version sent

    state = await provider.hold_state(hold.reference)
    assert (state.status, state.amount_held, state.amount_captured) == (HoldStatus.PENDING, 0, 0)

    await pay(http, hold.redirect_url)
    state = await provider.hold_state(hold.reference)
    assert (state.status, state.amount_held, state.method) == (HoldStatus.AUTHORIZED, 3000, "card")

    state = await provider.capture(hold.reference, 1234, "cap-pay_0001")
    assert (state.status, state.amount_held, state.amount_captured) == (
        HoldStatus.CAPTURED,
        0,
        1234,
    )
    intent_id = session["payment_intent"]
    assert standin.captures == [(intent_id, 1234)]
    charge = standin.charges[standin.intents[intent_id]["latest_charge"]]
    assert charge["amount_captured"] == 1234 and charge["amount_refunded"] == 3000 - 1234

    # repeated (a worker restarted after kill -9): same key, then another key
    again = await provider.capture(hold.reference, 1234, "cap-pay_0001")
    assert again == state
    again = await provider.capture(hold.reference, 1234, "cap-pay_0001-b")
    assert again.amount_captured == 1234
    assert standin.captures == [(intent_id, 1234)]
    # and a release after the capture answers the capture
    released = await provider.release(hold.reference, "rel-pay_0001")
    assert released.status == HoldStatus.CAPTURED and released.amount_captured == 1234


async def test_create_hold_is_idempotent_on_the_payment(
    provider: StripeProvider, standin: StripeStandin
) -> None:
    first = await provider.create_hold(request("pay_idem"))
    second = await provider.create_hold(request("pay_idem"))
    assert first == second
    assert len(standin.sessions) == 1
    # the same payment with other terms is a programming error, not a second session
    with pytest.raises(ProviderError) as e:
        await provider.create_hold(request("pay_idem", amount=4000))
    assert e.value.retryable is False
    assert "IdempotencyError" in str(e.value)
    assert len(standin.sessions) == 1


async def test_capture_answer_lost_then_retried_captures_once(
    provider: StripeProvider, standin: StripeStandin, http: aiohttp.ClientSession
) -> None:
    hold = await provider.create_hold(request("pay_lost"))
    await pay(http, hold.redirect_url)
    # Stripe captures, the answer is lost on the way back
    standin.fail_next("/v1/payment_intents/", 500, after_execution=True)
    with pytest.raises(ProviderError) as e:
        await provider.capture(hold.reference, 2000, "cap-pay_lost")
    assert e.value.retryable is True
    assert len(standin.captures) == 1
    state = await provider.capture(hold.reference, 2000, "cap-pay_lost")
    assert (state.status, state.amount_captured) == (HoldStatus.CAPTURED, 2000)
    assert len(standin.captures) == 1


async def test_concurrent_captures_capture_once(
    provider: StripeProvider, standin: StripeStandin, http: aiohttp.ClientSession
) -> None:
    hold = await provider.create_hold(request("pay_race"))
    await pay(http, hold.redirect_url)
    states = await asyncio.gather(
        provider.capture(hold.reference, 1500, "cap-a"),
        provider.capture(hold.reference, 1500, "cap-b"),
        provider.capture(hold.reference, 1500, "cap-c"),
    )
    assert {(s.status, s.amount_captured) for s in states} == {(HoldStatus.CAPTURED, 1500)}
    assert len(standin.captures) == 1


async def test_capture_after_a_stale_read_captures_once(
    provider: StripeProvider,
    standin: StripeStandin,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another worker captured between this one's read and its capture: Stripe refuses the
    second capture (payment_intent_unexpected_state) and the state is answered."""
    hold = await provider.create_hold(request("pay_stale"))
    await pay(http, hold.redirect_url)
    stale = await provider._read(hold.reference)  # AUTHORIZED, 3000 held
    await provider.capture(hold.reference, 1000, "cap-first")
    real = provider._read
    reads = iter([stale])

    async def read(reference: str) -> dict[str, Any]:
        return next(reads, None) or await real(reference)

    monkeypatch.setattr(provider, "_read", read)
    state = await provider.capture(hold.reference, 1000, "cap-second")
    assert (state.status, state.amount_captured) == (HoldStatus.CAPTURED, 1000)
    assert len(standin.captures) == 1
    capture_posts = [r for r in standin.requests if r[1].endswith("/capture")]
    assert [r[2] for r in capture_posts] == ["cap-first", "cap-second"]


async def test_release_while_the_driver_pays(
    provider: StripeProvider,
    standin: StripeStandin,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker gives up on a hold just as the driver pays: the session cannot be
    expired any more, so the authorised amount is let go instead."""
    hold = await provider.create_hold(request("pay_late"))
    real = provider._read
    first = True

    async def read(reference: str) -> dict[str, Any]:
        nonlocal first
        session = await real(reference)
        if first:  # read as unpaid; the driver pays before the expiry reaches Stripe
            first = False
            assert hold.redirect_url is not None
            await pay(http, hold.redirect_url)
        return session

    monkeypatch.setattr(provider, "_read", read)
    state = await provider.release(hold.reference, "rel-pay_late")
    assert (state.status, state.amount_held) == (HoldStatus.RELEASED, 0)
    intent = standin.intents[standin.sessions[hold.reference]["payment_intent"]]
    assert intent["status"] == "canceled"
    assert standin.captures == []


async def test_capture_timed_out_then_retried(
    standin: StripeStandin, http: aiohttp.ClientSession
) -> None:
    """The capture's answer is slower than the provider's timeout; Stripe captured anyway.
    The retry with the same key answers the capture and does not make another."""
    provider = StripeProvider(settings_for(standin, timeout=0.5))
    try:
        hold = await provider.create_hold(request("pay_slow"))
        assert hold.redirect_url is not None
        await pay(http, hold.redirect_url)
        standin.delay_next("/v1/payment_intents/", 1.5)
        with pytest.raises(ProviderError) as e:
            await provider.capture(hold.reference, 2500, "cap-pay_slow")
        assert e.value.retryable is True
        for _ in range(50):  # the stand-in finishes the capture (bounded wait)
            if standin.captures:
                break
            await asyncio.sleep(0.1)
        state = await provider.capture(hold.reference, 2500, "cap-pay_slow")
        assert (state.status, state.amount_captured) == (HoldStatus.CAPTURED, 2500)
        assert len(standin.captures) == 1
    finally:
        await provider.close()


async def test_library_retry_reuses_the_key(standin: StripeStandin) -> None:
    """With the library's own retries, a 500 is tried again with the same idempotency key
    (one session) and the caller sees success."""
    provider = StripeProvider(settings_for(standin, max_network_retries=1))
    try:
        standin.fail_next("/v1/checkout/sessions", 500)
        hold = await provider.create_hold(request("pay_retry"))
    finally:
        await provider.close()
    posts = [r for r in standin.requests if r[0] == "POST"]
    assert posts == [("POST", "/v1/checkout/sessions", "hold-pay_retry")] * 2
    assert list(standin.sessions) == [hold.reference]


async def test_release_before_authorization_expires_the_session(
    provider: StripeProvider, standin: StripeStandin, http: aiohttp.ClientSession
) -> None:
    hold = await provider.create_hold(request("pay_rel0"))
    state = await provider.release(hold.reference, "rel-pay_rel0")
    assert (state.status, state.amount_held) == (HoldStatus.DECLINED, 0)
    assert standin.sessions[hold.reference]["status"] == "expired"
    async with http.get(hold.redirect_url) as resp:
        assert resp.status == 410  # the driver can no longer pay
    again = await provider.release(hold.reference, "rel-pay_rel0")
    assert again.status == HoldStatus.DECLINED
    expires = [r for r in standin.requests if r[1].endswith("/expire")]
    assert expires == [
        ("POST", f"/v1/checkout/sessions/{hold.reference}/expire", "rel-pay_rel0-expire")
    ]


async def test_release_after_authorization_cancels_the_intent(
    provider: StripeProvider, standin: StripeStandin, http: aiohttp.ClientSession
) -> None:
    hold = await provider.create_hold(request("pay_rel1"))
    await pay(http, hold.redirect_url)
    state = await provider.release(hold.reference, "rel-pay_rel1")
    assert (state.status, state.amount_held, state.amount_captured) == (HoldStatus.RELEASED, 0, 0)
    intent = standin.intents[standin.sessions[hold.reference]["payment_intent"]]
    assert intent["status"] == "canceled"
    assert standin.charges[intent["latest_charge"]]["refunded"] is True
    assert (await provider.release(hold.reference, "rel-pay_rel1")).status == HoldStatus.RELEASED
    with pytest.raises(ProviderError) as e:
        await provider.capture(hold.reference, 100, "cap-pay_rel1")
    assert e.value.retryable is False
    assert standin.captures == []


async def test_decline_then_abandon(
    provider: StripeProvider, standin: StripeStandin, http: aiohttp.ClientSession
) -> None:
    hold = await provider.create_hold(request("pay_dec"))
    standin.decline_next()
    resp = await press(http, hold.redirect_url, "Pay")
    assert resp.status == 402  # the page says the card was declined; another may be tried
    state = await provider.hold_state(hold.reference)
    assert state.status == HoldStatus.PENDING and state.amount_held == 0
    resp = await press(http, hold.redirect_url, "Decline")
    assert (resp.status, resp.headers["Location"]) == (303, CANCEL)
    assert (await provider.hold_state(hold.reference)).status == HoldStatus.PENDING
    # the worker gives up: nothing was ever held, so the hold is declined, not released
    state = await provider.release(hold.reference, "rel-pay_dec")
    assert state.status == HoldStatus.DECLINED
    intent = standin.intents[standin.sessions[hold.reference]["payment_intent"]]
    assert intent["status"] == "canceled"


async def test_decline_then_another_card(
    provider: StripeProvider, standin: StripeStandin, http: aiohttp.ClientSession
) -> None:
    hold = await provider.create_hold(request("pay_dec2"))
    standin.decline_next()
    assert (await press(http, hold.redirect_url, "Pay")).status == 402
    await pay(http, hold.redirect_url)
    state = await provider.hold_state(hold.reference)
    assert (state.status, state.amount_held) == (HoldStatus.AUTHORIZED, 3000)


async def test_expired_session_is_declined(
    provider: StripeProvider, standin: StripeStandin
) -> None:
    hold = await provider.create_hold(request("pay_exp"))
    standin.expire_session(hold.reference)
    assert (await provider.hold_state(hold.reference)).status == HoldStatus.DECLINED


# -- refusals and errors ---------------------------------------------------------------


async def test_capture_amounts_checked(
    provider: StripeProvider, standin: StripeStandin, http: aiohttp.ClientSession
) -> None:
    hold = await provider.create_hold(request("pay_amt"))
    with pytest.raises(ProviderError) as e:  # nothing held yet
        await provider.capture(hold.reference, 100, "k1")
    assert e.value.retryable is False
    await pay(http, hold.redirect_url)
    for amount in (0, -5, 3001, True, 10.5):
        with pytest.raises(ProviderError) as e:
            await provider.capture(hold.reference, amount, "k2")  # type: ignore[arg-type]
        assert e.value.retryable is False, amount
    for key in ("", "x" * 300, "bad\nkey"):
        with pytest.raises(ProviderError):
            await provider.capture(hold.reference, 100, key)
    assert standin.captures == []
    state = await provider.capture(hold.reference, 3000, "k3")  # all of it
    assert (state.status, state.amount_captured) == (HoldStatus.CAPTURED, 3000)


async def test_bad_references(provider: StripeProvider, standin: StripeStandin) -> None:
    for ref in ("", "pi_123", "cs_../../v1/payment_intents", "cs_" + "a" * 300):
        with pytest.raises(ProviderError) as e:
            await provider.hold_state(ref)
        assert e.value.retryable is False
    assert standin.requests == []  # refused before asking
    with pytest.raises(ProviderError) as e:
        await provider.hold_state("cs_test_unknown")
    assert e.value.retryable is False and "resource_missing" in str(e.value)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (429, True), (400, False), (402, False), (404, False)],
)
async def test_errors_retryable_or_not(
    provider: StripeProvider, standin: StripeStandin, status: int, retryable: bool
) -> None:
    standin.fail_next("/v1/checkout/sessions", status)
    with pytest.raises(ProviderError) as e:
        await provider.create_hold(request(f"pay_err{status}"))
    assert e.value.retryable is retryable
    assert standin.sessions == {}
    # it passes once the stand-in answers again
    hold = await provider.create_hold(request(f"pay_err{status}"))
    assert hold.reference in standin.sessions


async def test_network_error_is_retryable(standin: StripeStandin) -> None:
    provider = StripeProvider(settings_for(standin))
    await standin.stop()  # nothing listens there any more
    try:
        with pytest.raises(ProviderError) as e:
            await provider.create_hold(request("pay_net"))
        assert e.value.retryable is True
    finally:
        await provider.close()


async def test_hold_requests_refused_before_stripe(
    provider: StripeProvider, standin: StripeStandin
) -> None:
    bad = [
        request(methods=("mb_way",)),  # Stripe cannot hold with MB WAY
        request(methods=()),
        request(amount=0),
        request(currency="EURO"),
        request(return_url="javascript:alert(1)"),
        request(payment_id=""),
    ]
    for req in bad:
        with pytest.raises(ProviderError) as e:
            await provider.create_hold(req)
        assert e.value.retryable is False
    assert standin.requests == []


async def test_standin_refuses_what_stripe_refuses(
    provider: StripeProvider, standin: StripeStandin
) -> None:
    with pytest.raises(ProviderError) as e:  # below Stripe's minimum charge
        await provider.create_hold(request("pay_small", amount=10))
    assert e.value.retryable is False and "amount_too_small" in str(e.value)
    with pytest.raises(ProviderError) as e:
        await provider.create_hold(request("pay_mail", email="not-an-address"))
    assert e.value.retryable is False and "email_invalid" in str(e.value)


# -- webhooks --------------------------------------------------------------------------


def _by_type(receiver: Receiver) -> dict[str, tuple[bytes, dict[str, str]]]:
    return {json.loads(body)["type"]: (body, headers) for body, headers in receiver.received}


async def test_webhooks_of_a_paid_and_an_expired_hold(
    provider: StripeProvider,
    standin: StripeStandin,
    receiver: Receiver,
    http: aiohttp.ClientSession,
) -> None:
    hold = await provider.create_hold(request("pay_wh"))
    await pay(http, hold.redirect_url)
    await standin.drain()
    got = _by_type(receiver)
    assert set(got) == {"payment_intent.amount_capturable_updated", "checkout.session.completed"}
    body, headers = got["checkout.session.completed"]
    event = provider.verify_webhook(body, headers, now())
    assert isinstance(event, WebhookEvent)
    assert event.reference == hold.reference and event.event_id.startswith("evt_")
    assert event.status == HoldStatus.PENDING  # the worker reads the intent: hold_state
    # an intent event does not name its session: not a hold's event (documented)
    body, headers = got["payment_intent.amount_capturable_updated"]
    assert provider.verify_webhook(body, headers, now()) is None

    # the same signed event POSTed again (a replay): the same event id, for the caller to
    # drop as already seen
    before = len(receiver.received)
    assert await standin.resend(event.event_id) == 200
    body, headers = receiver.received[before]
    again = provider.verify_webhook(body, headers, now())
    assert again == event

    other = await provider.create_hold(request("pay_wh2"))
    standin.expire_session(other.reference)
    await standin.drain()
    body, headers = _by_type(receiver)["checkout.session.expired"]
    event = provider.verify_webhook(body, headers, now())
    assert event is not None
    assert (event.reference, event.status) == (other.reference, HoldStatus.DECLINED)


async def test_webhook_rejections(
    provider: StripeProvider,
    standin: StripeStandin,
    receiver: Receiver,
    http: aiohttp.ClientSession,
) -> None:
    hold = await provider.create_hold(request("pay_whr"))
    await pay(http, hold.redirect_url)
    await standin.drain()
    body, headers = _by_type(receiver)["checkout.session.completed"]
    signed_at = int(re.search(r"t=(\d+)", headers["Stripe-Signature"]).group(1))  # type: ignore[union-attr]
    at = datetime.fromtimestamp(signed_at, UTC)

    messages = []
    cases: list[tuple[bytes, dict[str, str], datetime]] = [
        (body.replace(b"pay_whr", b"pay_xxx"), headers, at),  # altered body
        (body, {"Content-Type": "application/json"}, at),  # no signature
        (body, {"Stripe-Signature": ""}, at),
        (body, {"Stripe-Signature": "t=abc,v1=00"}, at),
        (body, {"Stripe-Signature": f"t={signed_at}"}, at),  # no v1
        (body, {"Stripe-Signature": f"t={signed_at},v0=" + "0" * 64}, at),
        (body, {"Stripe-Signature": f"t={signed_at},v1=\u00e9"}, at),  # not ASCII
        (body, {"Stripe-Signature": "t=99999999999999999999,v1=00"}, at),
        (body, headers, at + timedelta(seconds=301)),  # too old now
        (body, headers, at - timedelta(seconds=301)),  # from the future
        (b"\xff\xfe" + body, headers, at),
    ]
    for raw, hdrs, when in cases:
        with pytest.raises(WebhookRejected) as e:
            provider.verify_webhook(raw, hdrs, when)
        messages.append(str(e.value))
    assert provider.verify_webhook(body, headers, at + timedelta(seconds=299)) is not None
    # header names are case-insensitive
    lower = {"stripe-signature": headers["Stripe-Signature"]}
    assert provider.verify_webhook(body, lower, at) is not None
    # signed by someone who does not have the secret
    forged = StripeStandin(webhook_secret="whsec_" + "1" * 32).sign(body, signed_at)
    with pytest.raises(WebhookRejected):
        provider.verify_webhook(body, {"Stripe-Signature": forged}, at)
    for text in messages:
        assert standin.webhook_secret not in text and standin.secret_key not in text


async def test_webhook_signed_long_ago(
    provider: StripeProvider,
    standin: StripeStandin,
    receiver: Receiver,
    http: aiohttp.ClientSession,
) -> None:
    standin.webhook_time_offset = -600  # the stand-in signs with a timestamp 10 min old
    hold = await provider.create_hold(request("pay_old"))
    await pay(http, hold.redirect_url)
    await standin.drain()
    body, headers = _by_type(receiver)["checkout.session.completed"]
    with pytest.raises(WebhookRejected, match="window"):
        provider.verify_webhook(body, headers, now())


def _signed(standin: StripeStandin, event: Any, at: datetime) -> tuple[bytes, dict[str, str]]:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    return body, {"Stripe-Signature": standin.sign(body, int(at.timestamp()))}


async def test_webhook_bodies(provider: StripeProvider, standin: StripeStandin) -> None:
    at = now()
    session = {"id": "cs_test_abc", "object": "checkout.session", "metadata": {"payment_id": "p"}}

    def event(type_: str, obj: Any) -> dict[str, Any]:
        return {"id": "evt_1", "object": "event", "type": type_, "data": {"object": obj}}

    # genuine but concerning no hold
    for body in (
        event("customer.created", {"id": "cus_1", "object": "customer"}),
        event("payment_intent.canceled", {"id": "pi_1", "object": "payment_intent"}),
        event("checkout.session.completed", {**session, "metadata": {}}),  # not ours
    ):
        assert provider.verify_webhook(*_signed(standin, body, at), at) is None
    expected = {
        "checkout.session.completed": HoldStatus.PENDING,
        "checkout.session.async_payment_succeeded": HoldStatus.PENDING,
        "checkout.session.async_payment_failed": HoldStatus.DECLINED,
        "checkout.session.expired": HoldStatus.DECLINED,
    }
    for type_, status in expected.items():
        got = provider.verify_webhook(*_signed(standin, event(type_, session), at), at)
        assert got == WebhookEvent("evt_1", "cs_test_abc", status)
    # signed, but malformed
    for body in (
        b"not json",
        b"[1, 2]",
        b"{}",
        json.dumps({"id": "evt_1", "object": "event", "type": "x", "data": []}).encode(),
        json.dumps(event("checkout.session.completed", {"object": "checkout.session"})).encode(),
        json.dumps(event("checkout.session.expired", {**session, "id": "cs_x/../y"})).encode(),
    ):
        with pytest.raises(WebhookRejected):
            provider.verify_webhook(*_signed(standin, body, at), at)


# -- configuration and secrets ---------------------------------------------------------


def test_settings_from_env() -> None:
    env = {SECRET_KEY_ENV: "sk_test_" + "a" * 24, WEBHOOK_SECRET_ENV: "whsec_" + "b" * 24}
    s = StripeSettings.from_env(env, api_base="http://127.0.0.1:9/", methods=["card", "link"])
    assert s.api_base == "http://127.0.0.1:9"
    assert s.secret_key.get_secret_value() == env[SECRET_KEY_ENV]
    assert env[SECRET_KEY_ENV] not in repr(s) and env[WEBHOOK_SECRET_ENV] not in repr(s)
    assert env[SECRET_KEY_ENV] not in str(s)

    with pytest.raises(ConfigError, match=WEBHOOK_SECRET_ENV):
        StripeSettings.from_env({SECRET_KEY_ENV: env[SECRET_KEY_ENV]})
    with pytest.raises(ConfigError) as e:
        StripeSettings.from_env({**env, SECRET_KEY_ENV: "pk_live_publishable_" + "z" * 20})
    assert SECRET_KEY_ENV in str(e.value) and "pk_live_publishable" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        StripeSettings.from_env({**env, WEBHOOK_SECRET_ENV: "secret with spaces zz"})
    assert "with spaces" not in str(e.value)
    with pytest.raises(ConfigError, match="mb_way"):
        StripeSettings.from_env(env, methods=["card", "mb_way"])
    with pytest.raises(ConfigError, match="api_base"):
        StripeSettings.from_env(env, api_base="ftp://x")


async def test_secrets_never_in_logs_or_errors(
    standin: StripeStandin,
    receiver: Receiver,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    provider = StripeProvider(settings_for(standin))
    try:
        texts += [repr(provider), repr(provider.settings), str(provider.settings)]
        hold = await provider.create_hold(request("pay_sec"))
        await pay(http, hold.redirect_url)
        await provider.capture(hold.reference, 500, "cap-pay_sec")
        await standin.drain()
        for body, headers in receiver.received:
            provider.verify_webhook(body, headers, now())
        with pytest.raises(WebhookRejected) as rejected:
            provider.verify_webhook(body.replace(b"pay_sec", b"pay_se"), headers, now())
        texts.append(str(rejected.value))
    finally:
        await provider.close()
    wrong = StripeProvider(settings_for(standin, secret_key=SecretStr("sk_test_" + "w" * 30)))
    try:
        with pytest.raises(ProviderError) as refused:  # 401: the key is wrong
            await wrong.create_hold(request("pay_sec2"))
        assert refused.value.retryable is False
        texts.append(str(refused.value))
    finally:
        await wrong.close()
    out = capsys.readouterr()
    texts += [caplog.text, out.out, out.err]
    assert "stripe hold captured" in caplog.text + out.out + out.err  # the logs were seen
    for text in texts:
        for secret in (standin.secret_key, standin.webhook_secret, "sk_test_" + "w" * 30):
            assert secret not in text


# -- the stand-in itself ---------------------------------------------------------------


def test_form_decoding() -> None:
    pairs = [
        ("line_items[0][price_data][currency]", "eur"),
        ("line_items[0][quantity]", "1"),
        ("line_items[1][quantity]", "2"),
        ("expand[]", "payment_intent"),
        ("expand[]", "payment_intent.latest_charge"),
        ("metadata[payment_id]", "p1"),
    ]
    assert decode_params(pairs) == {
        "line_items": [{"price_data": {"currency": "eur"}, "quantity": "1"}, {"quantity": "2"}],
        "expand": ["payment_intent", "payment_intent.latest_charge"],
        "metadata": {"payment_id": "p1"},
    }


async def test_standin_idempotency_and_auth(
    standin: StripeStandin, http: aiohttp.ClientSession
) -> None:
    auth = {"Authorization": f"Bearer {standin.secret_key}"}
    form = {
        "mode": "payment",
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "eur",
        "line_items[0][price_data][unit_amount]": "500",
        "line_items[0][price_data][product_data][name]": "x",
        "success_url": RETURN,
    }
    url = standin.url + "/v1/checkout/sessions"
    answers = []
    for _ in range(2):
        async with http.post(url, data=form, headers={**auth, "Idempotency-Key": "k"}) as r:
            answers.append((r.status, await r.json(), r.headers.get("Idempotent-Replayed")))
    assert answers[0][0] == 200 and answers[0][1] == answers[1][1]
    assert (answers[0][2], answers[1][2]) == (None, "true")
    assert len(standin.sessions) == 1
    async with http.post(
        url, data={**form, "success_url": CANCEL}, headers={**auth, "Idempotency-Key": "k"}
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "idempotency_error"
    async with http.post(url, data={**form, "colour": "red"}, headers=auth) as r:
        assert r.status == 400 and (await r.json())["error"]["param"] == "colour"
    async with http.post(url, data=form, headers={"Authorization": "Bearer sk_test_no"}) as r:
        assert r.status == 401 and "sk_test_no" not in await r.text()
    async with http.get(standin.url + "/v1/customers", headers=auth) as r:
        assert r.status == 404 and (await r.json())["error"]["type"] == "invalid_request_error"
