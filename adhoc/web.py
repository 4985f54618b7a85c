"""The driver's pages (public, no account): ``/charge/...``.

- ``GET /charge/{evse_uid}``: the EVSE (the QR code's target): where, connector and power,
  free or not, the ad hoc price in full, and a form to pay the hold (e-mail optional).
- ``POST /charge/{evse_uid}``: create the payment and go to the provider's page (or, with
  the manual provider, straight to the charge).
- ``GET /charge/s/{payment}``: the driver's charge: waiting, charging (energy, time, cost
  so far, live), the stop button, the result and the receipt. The link is the secret (128
  random bits); a cookie brings it back from the EVSE page.
- ``GET /charge/s/{payment}/live``: the same as JSON (the page polls it).
- ``POST /charge/s/{payment}/stop``; ``POST /charge/s/{payment}/cancel`` (before the start:
  the hold is released at once); ``GET /charge/s/{payment}/receipt.pdf``.
- ``POST /charge/webhooks/{provider}``: the provider's signed notifications.

Every page is rate-limited per client address (``adhoc.public_rate_limit`` a minute; the
signed webhooks are not) and shows only the driver's own payment. Forms carry a
double-submit token (cookie and field) so that another site cannot post them.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape

from csms.ports import Proxies, dumps

from .providers.base import WebhookRejected
from .receipts import render_html, render_pdf
from .receipts_data import to_receipt
from .service import AdhocService, Refused
from .views import offer_view

log = structlog.get_logger("adhoc.web")

COOKIE = "adhoc_payment"
CSRF = "adhoc_csrf"
MAX_WEBHOOK_BODY = 256 * 1024
# addresses remembered by the rate limiter (the oldest forgotten first)
MAX_ADDRESSES = 50_000

MESSAGES: dict[str, dict[str, str]] = {
    "pt": {
        "title": "Carregar e pagar",
        "free": "Livre",
        "busy": "Ocupado",
        "paying": "Outro condutor está a pagar neste posto",
        "offline": "Posto sem ligação",
        "unavailable": "Indisponível",
        "price": "Preço",
        "ENERGY": "Energia",
        "TIME": "Tempo de carregamento",
        "PARKING_TIME": "Tempo de estacionamento",
        "FLAT": "Taxa de ativação",
        "per_kWh": "/kWh",
        "per_hour": "/hora",
        "per_session": "por carregamento",
        "vat_incl": "com IVA",
        "vat": "IVA",
        "excl_vat": "sem IVA",
        "min_price": "Preço mínimo",
        "max_price": "Preço máximo",
        "hold": "Será cativado {amount} no seu meio de pagamento; só paga o que carregar.",
        "email": "E-mail para o recibo (opcional)",
        "pay": "Pagar e carregar",
        "connector": "Tomada",
        "power": "Potência",
        "status": "Estado",
        "your_charge": "Voltar ao seu carregamento",
        "pending": "A aguardar a confirmação do pagamento…",
        "authorized": "Pagamento confirmado. A iniciar o carregamento…",
        "starting": "A iniciar o carregamento… ligue o carro, se ainda não o fez.",
        "charging": "A carregar",
        "stopped": "Carregamento terminado. A calcular o preço…",
        "capturing": "Carregamento terminado. A cobrar…",
        "captured": "Carregamento terminado. Obrigado!",
        "released": "O valor cativado foi libertado.",
        "energy": "Energia",
        "duration": "Duração",
        "cost": "Custo até agora",
        "cost_final": "Custo",
        "cancel": "Cancelar o pagamento",
        "back_to_evse": "Voltar ao posto",
        "stop": "Parar o carregamento",
        "held": "Cativado",
        "charged": "Cobrado",
        "receipt": "Recibo",
        "receipt_pdf": "Descarregar o recibo (PDF)",
        "keep_link": "Guarde esta página: o link traz de volta o seu carregamento.",
        "reason_declined": "O pagamento não foi aceite.",
        "reason_abandoned": "O pagamento não foi confirmado a tempo.",
        "reason_station_offline": "O posto está sem ligação; nada foi cobrado.",
        "reason_station_refused": "O posto recusou iniciar; nada foi cobrado.",
        "reason_start_timeout": "O posto não iniciou a tempo; nada foi cobrado.",
        "reason_nothing_to_pay": "Nada a pagar.",
        "reason_cancelled": "Cancelou o pagamento; nada foi cobrado.",
        "err_unknown_evse": "Este posto não existe ou não aceita pagamento no local.",
        "err_evse_busy": "Este posto está ocupado.",
        "err_evse_paying": "Outro condutor está a pagar neste posto.",
        "err_evse_offline": "O posto está sem ligação. Tente outro.",
        "err_evse_unavailable": "Este posto está indisponível.",
        "err_provider_error": "O serviço de pagamento não respondeu. Tente de novo.",
        "err_bad_email": "O endereço de e-mail não é válido.",
        "err_bad_form": "O formulário expirou. Recarregue a página.",
        "err_not_found": "Página não encontrada.",
        "err_too_many": "Demasiados pedidos. Aguarde um minuto.",
        "cancelled": "Pagamento cancelado.",
    },
    "en": {
        "title": "Charge and pay",
        "free": "Free",
        "busy": "Occupied",
        "paying": "Another driver is paying at this charger",
        "offline": "Charger offline",
        "unavailable": "Unavailable",
        "price": "Price",
        "ENERGY": "Energy",
        "TIME": "Charging time",
        "PARKING_TIME": "Parking time",
        "FLAT": "Start fee",
        "per_kWh": "/kWh",
        "per_hour": "/hour",
        "per_session": "per charge",
        "vat_incl": "incl. VAT",
        "vat": "VAT",
        "excl_vat": "excl. VAT",
        "min_price": "Minimum price",
        "max_price": "Maximum price",
        "hold": "{amount} will be held on your payment method; you only pay what you charge.",
        "email": "E-mail for the receipt (optional)",
        "pay": "Pay and charge",
        "connector": "Connector",
        "power": "Power",
        "status": "Status",
        "your_charge": "Back to your charge",
        "pending": "Waiting for the payment to be confirmed…",
        "authorized": "Payment confirmed. Starting the charge…",
        "starting": "Starting the charge… plug in your car if you have not yet.",
        "charging": "Charging",
        "stopped": "Charge finished. Computing the price…",
        "capturing": "Charge finished. Charging your payment…",
        "captured": "Charge finished. Thank you!",
        "released": "The amount held was released.",
        "energy": "Energy",
        "duration": "Duration",
        "cost": "Cost so far",
        "cost_final": "Cost",
        "cancel": "Cancel the payment",
        "back_to_evse": "Back to the charger",
        "stop": "Stop charging",
        "held": "Held",
        "charged": "Charged",
        "receipt": "Receipt",
        "receipt_pdf": "Download the receipt (PDF)",
        "keep_link": "Keep this page: its link brings your charge back.",
        "reason_declined": "The payment was not accepted.",
        "reason_abandoned": "The payment was not confirmed in time.",
        "reason_station_offline": "The charger is offline; nothing was charged.",
        "reason_station_refused": "The charger refused to start; nothing was charged.",
        "reason_start_timeout": "The charger did not start in time; nothing was charged.",
        "reason_nothing_to_pay": "Nothing to pay.",
        "reason_cancelled": "You cancelled the payment; nothing was charged.",
        "err_unknown_evse": "This charger does not exist or takes no payment on the spot.",
        "err_evse_busy": "This charger is occupied.",
        "err_evse_paying": "Another driver is paying at this charger.",
        "err_evse_offline": "The charger is offline. Try another one.",
        "err_evse_unavailable": "This charger is unavailable.",
        "err_provider_error": "The payment service did not answer. Try again.",
        "err_bad_email": "The e-mail address is not valid.",
        "err_bad_form": "The form expired. Reload the page.",
        "err_not_found": "Page not found.",
        "err_too_many": "Too many requests. Wait a minute.",
        "cancelled": "Payment cancelled.",
    },
}


def money(amount: Decimal | int | str, currency: str, lang: str, minor: bool = False) -> str:
    """An amount for a driver: ``0,35 €`` (pt) or ``€0.35`` (en); ``minor``: in cents."""
    value = Decimal(str(amount))
    if minor:
        value = value / 100
    text = f"{value.quantize(Decimal('0.01'), ROUND_HALF_UP):,.2f}"
    symbol = "€" if currency == "EUR" else currency + " "
    if lang == "pt":
        text = text.replace(",", " ").replace(".", ",")
        return f"{text} {symbol.strip()}"
    return f"{symbol}{text}"


def number(value: Decimal | float | int, places: int, lang: str) -> str:
    """A quantity for a driver: ``5,00`` (pt) or ``5.00`` (en)."""
    text = f"{Decimal(str(value)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP):.{places}f}"
    return text.replace(".", ",") if lang == "pt" else text


def unit_price(value: Decimal | str, currency: str, lang: str) -> str:
    """A unit price keeps up to 4 decimals (0,3512 €/kWh)."""
    v = Decimal(str(value)).normalize()
    places = max(2, min(4, -v.as_tuple().exponent if v.as_tuple().exponent < 0 else 0))  # type: ignore[operator]
    text = f"{v:.{places}f}"
    if lang == "pt":
        return (
            f"{text.replace('.', ',')} €"
            if currency == "EUR"
            else f"{text.replace('.', ',')} {currency}"
        )
    return f"€{text}" if currency == "EUR" else f"{currency} {text}"


class RateLimiter:
    """At most ``per_minute`` requests a minute per key (a token bucket per key), keys
    bounded (the least recently seen forgotten first)."""

    def __init__(self, per_minute: int, max_keys: int = MAX_ADDRESSES) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(per_minute)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if ok else tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return ok


def _language(request: web.Request) -> str:
    lang = request.query.get("lang")
    if lang in ("pt", "en"):
        return lang
    accept = request.headers.get("Accept-Language", "").lower()
    for part in accept.split(","):
        tag = part.split(";")[0].strip()[:2]
        if tag in ("pt", "en"):
            return tag
    return "pt"


def _valid_email(text: str) -> bool:
    if len(text) > 254 or text.count("@") != 1:
        return False
    local, _, domain = text.partition("@")
    return bool(local) and "." in domain and not any(c.isspace() or c in "<>\"'," for c in text)


class ChargePages:
    def __init__(self, service: AdhocService, proxies: Proxies, secure_cookies: bool) -> None:
        self.service = service
        self.proxies = proxies
        self.secure = secure_cookies
        self.limiter = RateLimiter(service.settings.public_rate_limit)
        self.env = Environment(
            loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
            autoescape=select_autoescape(["html"]),
        )
        self.env.globals.update(money=money, unit_price=unit_price, number=number)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._limit], client_max_size=MAX_WEBHOOK_BODY)
        app.add_routes(
            [
                web.get("/s/{payment}", self.session_page),
                web.get("/s/{payment}/live", self.live),
                web.post("/s/{payment}/stop", self.stop),
                web.post("/s/{payment}/cancel", self.cancel),
                web.get("/s/{payment}/receipt.pdf", self.receipt_pdf),
                web.post("/webhooks/{provider}", self.webhook),
                web.get("/{evse_uid}", self.evse_page),
                web.post("/{evse_uid}", self.pay),
            ]
        )
        return app

    # ------------------------------------------------------------------ plumbing

    @web.middleware
    async def _limit(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/charge/webhooks/"):
            address = self.proxies.client_address(request)
            if not self.limiter.allow(address):
                lang = _language(request)
                resp = self._render(
                    "charge_message.html", lang, status=429, message=MESSAGES[lang]["err_too_many"]
                )
                resp.headers["Retry-After"] = "60"
                return resp
        response = await handler(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    def _render(self, template: str, lang: str, status: int = 200, **ctx: Any) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        html = self.env.get_template(template).render(
            t=MESSAGES[lang], lang=lang, nonce=nonce, **ctx
        )
        resp = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
        resp.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
        )
        return resp

    def _csrf(self, request: web.Request) -> str:
        token = request.cookies.get(CSRF)
        if token and 20 <= len(token) <= 64:
            return token
        return secrets.token_urlsafe(24)

    def _set_cookies(self, response: web.StreamResponse, csrf: str) -> None:
        response.set_cookie(
            CSRF, csrf, path="/charge", httponly=True, samesite="Strict", secure=self.secure
        )

    async def _form(self, request: web.Request) -> dict[str, str] | None:
        """The posted form when its double-submit token matches, else None."""
        if request.content_length is not None and request.content_length > 4096:
            return None
        try:
            form = await request.post()
        except Exception:
            return None
        token, cookie = str(form.get("csrf", "")), request.cookies.get(CSRF, "")
        if not token or not cookie or not hmac.compare_digest(token, cookie):
            return None
        return {k: str(v) for k, v in form.items() if isinstance(v, str)}

    def _message(self, lang: str, key: str, status: int) -> web.Response:
        return self._render("charge_message.html", lang, status=status, message=MESSAGES[lang][key])

    # ------------------------------------------------------------------ the EVSE

    async def evse_page(self, request: web.Request) -> web.StreamResponse:
        lang = _language(request)
        uid = request.match_info["evse_uid"]
        if len(uid) > 48:
            return self._message(lang, "err_unknown_evse", 404)
        view = await self.service.evse(uid)
        if view is None:
            return self._message(lang, "err_unknown_evse", 404)
        mine = None
        pid = request.cookies.get(COOKIE)
        if pid and len(pid) <= 64:
            p = await self.service.store.get(pid)
            if (
                p is not None
                and p["evse_uid"] == uid
                and p["state"] not in ("captured", "released")
            ):
                mine = pid
        csrf = self._csrf(request)
        offer = offer_view(view.offer)
        resp = self._render(
            "charge_evse.html",
            lang,
            offer=offer,
            evse_status=view.status,
            hold=money(view.hold_minor, offer["currency"], lang, minor=True),
            csrf=csrf,
            mine=mine,
            error=None,
        )
        self._set_cookies(resp, csrf)
        return resp

    async def pay(self, request: web.Request) -> web.StreamResponse:
        lang = _language(request)
        uid = request.match_info["evse_uid"]
        form = await self._form(request)
        if form is None:
            return self._message(lang, "err_bad_form", 400)
        lang = form.get("lang") if form.get("lang") in ("pt", "en") else lang
        email = form.get("email", "").strip() or None
        if email is not None and not _valid_email(email):
            return self._message(lang, "err_bad_email", 400)
        try:
            payment = await self.service.begin(uid, email, lang)
        except Refused as e:
            key = f"err_{e.code}"
            return self._message(
                lang, key if key in MESSAGES[lang] else "err_provider_error", e.status
            )
        target = payment.get("redirect_url") or f"/charge/s/{payment['id']}"
        resp = web.Response(status=303, headers={"Location": target})
        resp.set_cookie(
            COOKIE,
            payment["id"],
            path="/charge",
            max_age=2 * 24 * 3600,
            httponly=True,
            samesite="Lax",
            secure=self.secure,
        )
        return resp

    # ------------------------------------------------------------------ the driver's charge

    async def _payment(self, request: web.Request) -> dict[str, Any] | None:
        pid = request.match_info["payment"]
        if not (16 <= len(pid) <= 64):
            return None
        return await self.service.store.get(pid)

    async def session_page(self, request: web.Request) -> web.StreamResponse:
        p = await self._payment(request)
        lang = _language(request) if "lang" in request.query else None
        if p is None:
            return self._message(lang or _language(request), "err_not_found", 404)
        lang = lang or p["language"]
        if request.query.get("paid") or request.query.get("cancelled"):
            self.service.wake()  # the driver is back from the provider: look now
        live = await self.service.live(p["id"])
        receipt_html = None
        receipt = await self.service.store.receipt_of(p["id"])
        if receipt is not None:
            body = dict(receipt["body"], language=lang)
            receipt_html = render_html(to_receipt(body))
        csrf = self._csrf(request)
        resp = self._render(
            "charge_session.html",
            lang,
            p=p,
            live=live,
            receipt_html=receipt_html,
            csrf=csrf,
            cancelled=bool(request.query.get("cancelled")),
        )
        self._set_cookies(resp, csrf)
        resp.set_cookie(
            COOKIE,
            p["id"],
            path="/charge",
            max_age=2 * 24 * 3600,
            httponly=True,
            samesite="Lax",
            secure=self.secure,
        )
        return resp

    async def live(self, request: web.Request) -> web.StreamResponse:
        p = await self._payment(request)
        if p is None:
            return web.json_response({"error": "not_found"}, status=404)
        live = await self.service.live(p["id"])
        return web.json_response(live, dumps=dumps)

    async def stop(self, request: web.Request) -> web.StreamResponse:
        p = await self._payment(request)
        lang = p["language"] if p else _language(request)
        if p is None:
            return self._message(lang, "err_not_found", 404)
        if await self._form(request) is None:
            return self._message(lang, "err_bad_form", 400)
        await self.service.stop_requested(p["id"])
        raise web.HTTPSeeOther(f"/charge/s/{p['id']}")

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        p = await self._payment(request)
        lang = p["language"] if p else _language(request)
        if p is None:
            return self._message(lang, "err_not_found", 404)
        if await self._form(request) is None:
            return self._message(lang, "err_bad_form", 400)
        await self.service.cancel_requested(p["id"])
        raise web.HTTPSeeOther(f"/charge/s/{p['id']}")

    async def receipt_pdf(self, request: web.Request) -> web.StreamResponse:
        p = await self._payment(request)
        receipt = await self.service.store.receipt_of(p["id"]) if p else None
        if receipt is None:
            return self._message(_language(request), "err_not_found", 404)
        lang = request.query.get("lang") if request.query.get("lang") in ("pt", "en") else None
        body = dict(receipt["body"], language=lang or receipt["body"]["language"])
        pdf = render_pdf(to_receipt(body))
        return web.Response(
            body=pdf,
            content_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="{receipt["body"]["number"]}.pdf"'},
        )

    # ------------------------------------------------------------------ provider notifications

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["provider"] != self.service.provider.name:
            return web.json_response({"error": "unknown provider"}, status=404)
        body = await request.read()
        try:
            outcome = await self.service.webhook(body, request.headers)
        except WebhookRejected as e:
            log.warning("webhook rejected", reason=str(e)[:200])
            return web.json_response({"error": str(e)[:200]}, status=400)
        return web.json_response({"received": True, "outcome": outcome})
