"""A local stand-in for the part of Stripe's HTTP API that the ``stripe`` provider uses, over
real HTTP on 127.0.0.1, as Stripe's official Python library speaks to it.

What it speaks (Stripe's documented behaviour, as far as ad hoc charging needs it):

- form-encoded bodies with bracket keys (``line_items[0][price_data][currency]=eur``) and
  ``expand[]`` on queries, ``Authorization: Bearer <secret key>`` (401 otherwise),
  ``Stripe-Version`` accepted, JSON errors shaped ``{"error": {"type", "code", "message",
  "param"}}``, unknown parameters refused;
- ``Idempotency-Key``: the first response of a POST that began executing is stored; the same
  key on the same path with the same parameters replays it (``Idempotent-Replayed: true``),
  with other parameters or another path it is an ``idempotency_error``;
- ``POST /v1/checkout/sessions``, ``GET /v1/checkout/sessions/{id}``,
  ``POST /v1/checkout/sessions/{id}/expire``, ``GET /v1/payment_intents/{id}``,
  ``POST /v1/payment_intents/{id}/capture``, ``POST /v1/payment_intents/{id}/cancel``;
  as in Stripe's API since 2022-08-01, a session's PaymentIntent is made when the customer
  confirms on the hosted page, and a Checkout Session's intent may be cancelled only when it
  is ``requires_capture`` (otherwise the session is expired);
- the hosted page at ``session.url`` (``GET /pay/{id}``), with "Pay" and "Decline" buttons:
  Pay authorises the amount (``requires_capture``), completes the session, redirects (303) to
  ``success_url`` and sends ``payment_intent.amount_capturable_updated`` and
  ``checkout.session.completed``; Decline redirects to ``cancel_url`` and leaves the session
  open;
- webhooks POSTed to :attr:`StripeStandin.webhook_url`, signed as Stripe signs them:
  ``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">``.

Test hooks: :attr:`captures`, :attr:`events`, :attr:`deliveries`, :attr:`requests`,
:meth:`fail_next`, :meth:`delay_next`, :meth:`decline_next`, :meth:`resend`, :meth:`expire_session`,
:meth:`drain`, :attr:`webhook_time_offset` (signs with an old or future timestamp) and
:attr:`drop_webhooks` (webhooks lost).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import html
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

JSON = dict[str, Any]

MANUAL_CAPTURE = {
    "affirm",
    "afterpay_clearpay",
    "alma",
    "amazon_pay",
    "billie",
    "card",
    "cashapp",
    "klarna",
    "link",
    "mobilepay",
    "revolut_pay",
    "satispay",
}
KNOWN_METHODS = MANUAL_CAPTURE | {"mb_way", "multibanco", "paypal", "sepa_debit", "ideal"}
LOCALES = {"auto", "pt", "en", "es", "fr", "de", "it", "nl"}
SESSION_PARAMS = {
    "mode",
    "line_items",
    "payment_intent_data",
    "metadata",
    "client_reference_id",
    "customer_email",
    "success_url",
    "cancel_url",
    "locale",
    "payment_method_types",
    "expand",
}
CANCELABLE = {
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
}


class _Refused(Exception):
    """A Stripe error answer; ``stored`` when the endpoint had begun executing (Stripe keeps
    those under the idempotency key; a parameter that fails validation is not kept)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        stored: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: JSON = {"error": {"type": type_, "message": message}}
        if code:
            self.body["error"]["code"] = code
        if param:
            self.body["error"]["param"] = param
        self.stored = stored


def decode_params(pairs: list[tuple[str, str]]) -> JSON:
    """Stripe's form encoding (``a[b][0][c]=v``, ``expand[]=x``) as nested dicts and lists."""
    if len(pairs) > 500:
        raise _Refused(400, "Too many parameters.")
    root: JSON = {}
    for key, value in pairs:
        m = re.fullmatch(r"([A-Za-z0-9_]+)((?:\[[A-Za-z0-9_.\-]*\])*)", key)
        if m is None:
            raise _Refused(400, f"Invalid parameter name: {key[:100]}", param=key[:100])
        parts = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))]
        if len(parts) > 6:
            raise _Refused(400, f"Parameter nested too deeply: {key[:100]}", param=key[:100])
        node: Any = root
        for i, part in enumerate(parts):
            if not isinstance(node, dict):
                raise _Refused(400, f"Invalid array or hash: {key[:100]}", param=key[:100])
            name = part if part != "" else str(len(node))
            if i == len(parts) - 1:
                if name in node:
                    raise _Refused(400, f"Parameter given twice: {key[:100]}", param=key[:100])
                node[name] = value
            else:
                node = node.setdefault(name, {})
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items):
        indexes = sorted(int(k) for k in items)
        if indexes != list(range(len(indexes))):
            raise _Refused(400, "Invalid array: indexes must start at 0 and be contiguous")
        return [items[str(i)] for i in indexes]
    return items


def _int(value: Any, param: str, minimum: int = 0) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"-?\d{1,15}", value):
        raise _Refused(
            400,
            "Invalid integer: " + str(value)[:50],
            param=param,
            code="parameter_invalid_integer",
        )
    number = int(value)
    if number < minimum:
        raise _Refused(
            400,
            f"This value must be greater than or equal to {minimum}.",
            param=param,
            code="parameter_invalid_integer",
        )
    return number


def _str(value: Any, param: str, max_len: int = 5000) -> str:
    if not isinstance(value, str):
        raise _Refused(400, f"Invalid string: {param}", param=param)
    if len(value) > max_len:
        raise _Refused(400, f"{param} is longer than {max_len} characters", param=param)
    return value


def _metadata(value: Any, param: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 50:
        raise _Refused(400, "Invalid metadata: a hash of at most 50 keys", param=param)
    return {k: _str(v, f"{param}[{k}]", 500) for k, v in value.items()}


def _url(value: Any, param: str) -> str:
    text = _str(value, param, 5000)
    if not re.match(r"^https?://[^\s]+$", text):
        raise _Refused(400, "Not a valid URL", param=param, code="url_invalid")
    return text


@dataclass
class Delivery:
    event_id: str
    status: int | str  # HTTP status of the receiver, or "error: ..." / "dropped"
    signature: str


class StripeStandin:
    """A Stripe stand-in on 127.0.0.1 (see the module's doc)."""

    def __init__(
        self,
        *,
        secret_key: str | None = None,
        webhook_secret: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret_key = secret_key or "sk_test_" + secrets.token_hex(16)
        self.webhook_secret = webhook_secret or "whsec_" + secrets.token_hex(16)
        self.clock = clock
        self.webhook_url: str | None = None
        self.webhook_time_offset = 0  # seconds added to the signature's timestamp
        self.drop_webhooks = False
        self.captures: list[tuple[str, int]] = []
        self.events: list[JSON] = []
        self.deliveries: list[Delivery] = []
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, idempotency key
        self.versions: set[str] = set()
        self.sessions: dict[str, JSON] = {}
        self.intents: dict[str, JSON] = {}
        self.charges: dict[str, JSON] = {}
        self._bodies: dict[str, bytes] = {}
        self._signatures: dict[str, str] = {}
        self._idempotent: dict[str, tuple[tuple[Any, ...], int, bytes]] = {}
        self._failures: list[list[Any]] = []  # [prefix, status, times left, after execution]
        self._declines = 0
        self._delays: list[list[Any]] = []  # [prefix, seconds]
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._client: aiohttp.ClientSession | None = None

    # -- life -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=256 * 1024)
        app.router.add_route("*", "/v1/{tail:.*}", self._api)
        app.router.add_get("/pay/{sid}", self._pay_page)
        app.router.add_post("/pay/{sid}/confirm", self._pay_confirm)
        app.router.add_post("/pay/{sid}/cancel", self._pay_cancel)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self._port = server.sockets[0].getsockname()[1]
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        self._worker = asyncio.create_task(self._deliver_forever())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- test hooks -----------------------------------------------------------------------

    def fail_next(
        self, path_prefix: str, status: int, *, times: int = 1, after_execution: bool = False
    ) -> None:
        """The next ``times`` API calls whose path starts with ``path_prefix`` answer
        ``status`` with a Stripe-shaped error. With ``after_execution`` the call is carried
        out (and its answer kept under its idempotency key) but the answer is lost: the
        client sees the error, as when a connection breaks after Stripe acted."""
        self._failures.append([path_prefix, status, times, after_execution])

    def failures_left(self) -> int:
        """How many of the failures asked for with :meth:`fail_next` have not happened yet."""
        return sum(entry[2] for entry in self._failures)

    def delay_next(self, path_prefix: str, seconds: float) -> None:
        """The next API call whose path starts with ``path_prefix`` is answered only after
        ``seconds`` (it is carried out then: a client that timed out does not know)."""
        self._delays.append([path_prefix, seconds])

    def decline_next(self) -> None:
        """The next Pay on a hosted page is refused by the card's issuer."""
        self._declines += 1

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until every webhook queued so far was delivered (or failed)."""
        await asyncio.wait_for(self._queue.join(), timeout)

    async def resend(self, event_id: str) -> int | str:
        """POST the same event again, the same bytes and the same signature (a replay); an
        event not delivered yet is signed now."""
        signature = self._signatures.get(event_id)
        if signature is None:
            signature = self.sign(self._bodies[event_id], self._now() + self.webhook_time_offset)
            self._signatures[event_id] = signature
        return await self._post_event(event_id, signature)

    def sign(self, body: bytes, timestamp: int) -> str:
        """A ``Stripe-Signature`` header for ``body`` at ``timestamp``, as Stripe makes it."""
        payload = str(timestamp).encode() + b"." + body
        mac = hmac.new(self.webhook_secret.encode(), payload, hashlib.sha256).hexdigest()
        return f"t={timestamp},v1={mac}"

    def expire_session(self, session_id: str) -> None:
        """What Stripe does at ``expires_at``: an open session expires (and its intent, if
        any, is cancelled)."""
        session = self.sessions[session_id]
        if session["status"] != "open":
            raise ValueError(f"the session is {session['status']}")
        self._expire(session)

    # -- objects --------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock())

    def _id(self, prefix: str) -> str:
        return prefix + secrets.token_hex(12)

    def _emit(self, type_: str, obj: JSON) -> None:
        event = {
            "id": self._id("evt_"),
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": self._now(),
            "data": {"object": copy.deepcopy(obj)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        self.events.append(event)
        body = json.dumps(event, indent=2).encode()
        self._bodies[event["id"]] = body
        self._queue.put_nowait(event["id"])

    def _expand(self, obj: JSON, paths: list[str]) -> JSON:
        out = copy.deepcopy(obj)
        for path in paths:
            node: Any = out
            parts = path.split(".")
            for i, name in enumerate(parts):
                if not isinstance(node, dict) or name not in node:
                    raise _Refused(
                        400, f"This property cannot be expanded ({path}).", param="expand"
                    )
                value = node[name]
                if isinstance(value, str):
                    found = self.intents.get(value) or self.charges.get(value)
                    if found is None:
                        raise _Refused(
                            400, f"This property cannot be expanded ({path}).", param="expand"
                        )
                    node[name] = value = copy.deepcopy(found)
                if i < len(parts) - 1 and value is None:
                    break
                node = value
        return out

    def _session_of_intent(self, intent: JSON) -> JSON | None:
        for session in self.sessions.values():
            if session["payment_intent"] == intent["id"]:
                return session
        return None

    def _expire(self, session: JSON) -> None:
        session["status"] = "expired"
        intent = self.intents.get(session["payment_intent"] or "")
        if intent is not None and intent["status"] in CANCELABLE:
            self._cancel(intent, "abandoned")
        self._emit("checkout.session.expired", _public(session))

    def _cancel(self, intent: JSON, reason: str) -> None:
        intent.update(
            status="canceled",
            amount_capturable=0,
            canceled_at=self._now(),
            cancellation_reason=reason,
        )
        charge = self.charges.get(intent["latest_charge"] or "")
        if charge is not None and charge["status"] == "succeeded" and not charge["captured"]:
            charge.update(refunded=True, amount_refunded=charge["amount"])
        self._emit("payment_intent.canceled", intent)

    # -- the API --------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        raw = await request.read()
        key = request.headers.get("Idempotency-Key")
        self.requests.append((request.method, request.path, key))
        version = request.headers.get("Stripe-Version")
        if version:
            self.versions.add(version)
        auth = request.headers.get("Authorization", "")
        if not hmac.compare_digest(auth.encode(), f"Bearer {self.secret_key}".encode()):
            return _error(401, "Invalid API Key provided.")
        for entry in self._delays:
            if request.path.startswith(entry[0]):
                self._delays.remove(entry)
                await asyncio.sleep(entry[1])
                break
        failure = self._failure(request.path)
        if failure is not None and not failure[1]:
            return _answer(*_failure_body(failure[0]))
        try:
            if request.method == "POST":
                if request.content_type != "application/x-www-form-urlencoded" and raw:
                    raise _Refused(
                        400, "Bodies are form-encoded (application/x-www-form-urlencoded)"
                    )
                pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
            else:
                pairs = parse_qsl(request.query_string, keep_blank_values=True)
            params = decode_params(pairs)
        except _Refused as e:
            return _answer(e.status, e.body)
        fingerprint = (request.method, request.path, tuple(sorted(pairs)))
        if request.method == "POST" and key:
            if len(key) > 255:
                return _error(400, "Idempotency keys are at most 255 characters.")
            stored = self._idempotent.get(key)
            if stored is not None:
                if stored[0] != fingerprint:
                    return _error(
                        400,
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                        "idempotency_error",
                    )
                resp = web.Response(
                    status=stored[1], body=stored[2], content_type="application/json"
                )
                resp.headers["Idempotent-Replayed"] = "true"
                resp.headers["Request-Id"] = self._id("req_")
                return resp
        try:
            status, body = self._route(request.method, request.path, params)
            keep = True
        except _Refused as e:
            status, body, keep = e.status, e.body, e.stored
        data = json.dumps(body).encode()
        if request.method == "POST" and key and keep:
            self._idempotent[key] = (fingerprint, status, data)
        if failure is not None:  # carried out, but the answer is lost
            return _answer(*_failure_body(failure[0]))
        resp = web.Response(status=status, body=data, content_type="application/json")
        resp.headers["Request-Id"] = self._id("req_")
        return resp

    def _failure(self, path: str) -> tuple[int, bool] | None:
        for entry in self._failures:
            if path.startswith(entry[0]) and entry[2] > 0:
                entry[2] -= 1
                return entry[1], entry[3]
        return None

    def _route(self, method: str, path: str, params: JSON) -> tuple[int, JSON]:
        parts = path.strip("/").split("/")
        expand = params.pop("expand", [])
        if not isinstance(expand, list) or not all(isinstance(p, str) for p in expand):
            raise _Refused(400, "Invalid expand: an array of strings", param="expand")
        match (method, parts[1:]):
            case ("POST", ["checkout", "sessions"]):
                return 200, self._expand(_public(self._create_session(params)), expand)
            case ("GET", ["checkout", "sessions", sid]):
                self._no_params(params)
                session = self._get(self.sessions, "checkout.session", sid)
                return 200, self._expand(_public(session), expand)
            case ("POST", ["checkout", "sessions", sid, "expire"]):
                self._no_params(params)
                session = self._get(self.sessions, "checkout.session", sid)
                if session["status"] != "open":
                    raise _Refused(
                        400,
                        'Only Checkout Sessions with a status in ["open"] can be '
                        f"expired. This session has a status of {session['status']}.",
                        stored=True,
                    )
                self._expire(session)
                return 200, self._expand(_public(session), expand)
            case ("GET", ["payment_intents", pid]):
                self._no_params(params)
                return 200, self._expand(self._get(self.intents, "payment_intent", pid), expand)
            case ("POST", ["payment_intents", pid, "capture"]):
                intent = self._get(self.intents, "payment_intent", pid)
                return 200, self._expand(self._capture(intent, params), expand)
            case ("POST", ["payment_intents", pid, "cancel"]):
                intent = self._get(self.intents, "payment_intent", pid)
                reason = params.pop("cancellation_reason", "requested_by_customer")
                self._no_params(params)
                self._cancel_checked(intent, reason)
                return 200, self._expand(intent, expand)
        raise _Refused(404, f"Unrecognized request URL ({method}: {path}).")

    def _no_params(self, params: JSON) -> None:
        if params:
            name = next(iter(params))
            raise _Refused(400, f"Received unknown parameter: {name}", param=name)

    def _get(self, store: dict[str, JSON], kind: str, oid: str) -> JSON:
        obj = store.get(oid)
        if obj is None:
            raise _Refused(
                404, f"No such {kind}: '{oid[:100]}'", code="resource_missing", param="id"
            )
        return obj

    def _create_session(self, p: JSON) -> JSON:
        for name in p:
            if name not in SESSION_PARAMS:
                raise _Refused(400, f"Received unknown parameter: {name}", param=name)
        if p.get("mode") != "payment":
            raise _Refused(400, "This stand-in makes sessions of mode payment only", param="mode")
        items = p.get("line_items")
        if not isinstance(items, list) or not items:
            raise _Refused(
                400,
                "Missing required param: line_items.",
                param="line_items",
                code="parameter_missing",
            )
        total, currency = 0, None
        for i, item in enumerate(items):
            where = f"line_items[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("price_data"), dict):
                raise _Refused(
                    400,
                    f"Missing required param: {where}[price_data].",
                    param=f"{where}[price_data]",
                    code="parameter_missing",
                )
            pd = item["price_data"]
            qty = _int(item.get("quantity", ""), f"{where}[quantity]", 1)
            unit = _int(pd.get("unit_amount", ""), f"{where}[price_data][unit_amount]", 0)
            cur = _str(pd.get("currency"), f"{where}[price_data][currency]", 3)
            if not re.fullmatch(r"[a-z]{3}", cur):
                raise _Refused(
                    400, f"Invalid currency: {cur}", param=f"{where}[price_data][currency]"
                )
            if currency not in (None, cur):
                raise _Refused(400, "All line items must have the same currency.")
            product = pd.get("product_data")
            if not isinstance(product, dict) or not _str(product.get("name"), "name", 250):
                raise _Refused(
                    400,
                    f"Missing required param: {where}[price_data][product_data][name].",
                    code="parameter_missing",
                )
            currency, total = cur, total + qty * unit
        if total < 50:
            raise _Refused(
                400,
                "The Checkout Session's total amount due must add up to at least €0.50 eur",
                code="amount_too_small",
            )
        pid_data = p.get("payment_intent_data") or {}
        if not isinstance(pid_data, dict):
            raise _Refused(400, "Invalid payment_intent_data", param="payment_intent_data")
        capture_method = pid_data.get("capture_method", "automatic")
        if capture_method not in ("automatic", "automatic_async", "manual"):
            raise _Refused(
                400,
                f"Invalid capture_method: {capture_method}",
                param="payment_intent_data[capture_method]",
            )
        methods = p.get("payment_method_types") or ["card"]
        if not isinstance(methods, list):
            raise _Refused(400, "Invalid array", param="payment_method_types")
        for i, m in enumerate(methods):
            if m not in KNOWN_METHODS:
                raise _Refused(
                    400,
                    f"Invalid payment_method_types[{i}]: {str(m)[:50]}",
                    param=f"payment_method_types[{i}]",
                )
            if capture_method == "manual" and m not in MANUAL_CAPTURE:
                raise _Refused(
                    400,
                    f"The payment method `{m}` does not support manual capture.",
                    param="payment_method_types",
                )
        locale = p.get("locale", "auto")
        if locale not in LOCALES:
            raise _Refused(400, f"Invalid locale: {str(locale)[:20]}", param="locale")
        email = p.get("customer_email")
        if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", str(email)):
            raise _Refused(
                400,
                "Invalid email address: " + str(email)[:100],
                param="customer_email",
                code="email_invalid",
            )
        success_url = _url(p.get("success_url"), "success_url")
        cancel_url = _url(p["cancel_url"], "cancel_url") if "cancel_url" in p else None
        sid = "cs_test_" + secrets.token_hex(24)
        now = self._now()
        session = {
            "id": sid,
            "object": "checkout.session",
            "amount_subtotal": total,
            "amount_total": total,
            "cancel_url": cancel_url,
            "client_reference_id": _str(
                p.get("client_reference_id", ""), "client_reference_id", 200
            )
            or None,
            "created": now,
            "currency": currency,
            "customer_email": email,
            "expires_at": now + 24 * 3600,
            "livemode": False,
            "locale": locale,
            "metadata": _metadata(p.get("metadata"), "metadata"),
            "mode": "payment",
            "payment_intent": None,
            "payment_method_types": methods,
            "payment_status": "unpaid",
            "status": "open",
            "success_url": success_url,
            "url": f"{self.url}/pay/{sid}",
            # what the intent will be made of (not a field of Stripe's session object)
            "_intent_data": {
                "capture_method": capture_method,
                "description": pid_data.get("description"),
                "metadata": _metadata(pid_data.get("metadata"), "payment_intent_data[metadata]"),
            },
        }
        self.sessions[sid] = session
        return session

    def _capture(self, intent: JSON, p: JSON) -> JSON:
        amount = intent["amount_capturable"]
        if "amount_to_capture" in p:
            amount = _int(p.pop("amount_to_capture"), "amount_to_capture", 1)
        self._no_params(p)
        if intent["status"] != "requires_capture":
            raise _Refused(
                400,
                "This PaymentIntent could not be captured because it has a status "
                f"of {intent['status']}. Only a PaymentIntent with one of the following "
                "statuses may be captured: requires_capture.",
                code="payment_intent_unexpected_state",
                stored=True,
            )
        if amount > intent["amount_capturable"]:
            raise _Refused(
                400,
                f"The amount to capture ({amount}) is more than the amount "
                f"capturable ({intent['amount_capturable']}).",
                code="amount_too_large",
                param="amount_to_capture",
                stored=True,
            )
        charge = self.charges[intent["latest_charge"]]
        intent.update(status="succeeded", amount_capturable=0, amount_received=amount)
        charge.update(
            captured=True, amount_captured=amount, amount_refunded=charge["amount"] - amount
        )
        self.captures.append((intent["id"], amount))
        self._emit("payment_intent.succeeded", intent)
        return intent

    def _cancel_checked(self, intent: JSON, reason: Any) -> None:
        if intent["status"] not in CANCELABLE:
            raise _Refused(
                400,
                "You cannot cancel this PaymentIntent because it has a status of "
                f"{intent['status']}.",
                code="payment_intent_unexpected_state",
                stored=True,
            )
        session = self._session_of_intent(intent)
        if session is not None and intent["status"] != "requires_capture":
            raise _Refused(
                400,
                "This PaymentIntent belongs to a Checkout Session: expire the "
                "Checkout Session instead.",
                code="payment_intent_unexpected_state",
                stored=True,
            )
        self._cancel(intent, str(reason))

    # -- the hosted page ------------------------------------------------------------------

    async def _pay_page(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["sid"])
        if session is None:
            return _page(404, "<p>Unknown checkout session.</p>")
        return self._render(session)

    def _render(self, session: JSON, note: str = "", status: int = 200) -> web.Response:
        if session["status"] != "open":
            return _page(410, f"<p>This checkout session is {session['status']}.</p>")
        sid = html.escape(session["id"])
        name = html.escape(str(session["metadata"].get("payment_id", "")))
        amount = f"{session['amount_total'] / 100:.2f} {session['currency'].upper()}"
        options = "".join(
            f'<option value="{html.escape(m)}">{html.escape(m)}</option>'
            for m in session["payment_method_types"]
        )
        body = (
            f"<h1>Hold {html.escape(amount)}</h1><p>{name}</p>{note}"
            f'<form method="post" action="/pay/{sid}/confirm">'
            f'<select name="method">{options}</select><button type="submit">Pay</button></form>'
            f'<form method="post" action="/pay/{sid}/cancel">'
            '<button type="submit">Decline</button></form>'
        )
        return _page(status, body)

    async def _pay_confirm(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["sid"])
        if session is None:
            return _page(404, "<p>Unknown checkout session.</p>")
        if session["status"] != "open":
            return _page(410, f"<p>This checkout session is {session['status']}.</p>")
        form = await request.post()
        method = str(form.get("method") or session["payment_method_types"][0])
        if method not in session["payment_method_types"]:
            return self._render(session, "<p>Choose a payment method.</p>", 400)
        data = session["_intent_data"]
        intent = self.intents.get(session["payment_intent"] or "")
        if intent is None:
            intent = {
                "id": self._id("pi_"),
                "object": "payment_intent",
                "amount": session["amount_total"],
                "amount_capturable": 0,
                "amount_received": 0,
                "canceled_at": None,
                "cancellation_reason": None,
                "capture_method": data["capture_method"],
                "created": self._now(),
                "currency": session["currency"],
                "description": data["description"],
                "last_payment_error": None,
                "latest_charge": None,
                "livemode": False,
                "metadata": dict(data["metadata"]),
                "payment_method_types": list(session["payment_method_types"]),
                "status": "requires_payment_method",
            }
            self.intents[intent["id"]] = intent
            session["payment_intent"] = intent["id"]
        declined = self._declines > 0
        if declined:
            self._declines -= 1
        charge = {
            "id": self._id("ch_"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": 0,
            "amount_refunded": 0,
            "captured": False,
            "created": self._now(),
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "payment_method_details": {"type": method},
            "refunded": False,
            "status": "failed" if declined else "succeeded",
        }
        self.charges[charge["id"]] = charge
        intent["latest_charge"] = charge["id"]
        if declined:
            intent.update(
                status="requires_payment_method",
                last_payment_error={"code": "card_declined", "decline_code": "generic_decline"},
            )
            self._emit("payment_intent.payment_failed", intent)
            return self._render(session, "<p>Your card was declined.</p>", 402)
        if intent["capture_method"] == "manual":
            intent.update(status="requires_capture", amount_capturable=intent["amount"])
            self._emit("payment_intent.amount_capturable_updated", intent)
        else:
            intent.update(status="succeeded", amount_received=intent["amount"])
            charge.update(captured=True, amount_captured=intent["amount"])
            session["payment_status"] = "paid"
            self._emit("payment_intent.succeeded", intent)
        session["status"] = "complete"
        self._emit("checkout.session.completed", _public(session))
        target = session["success_url"].replace("{CHECKOUT_SESSION_ID}", session["id"])
        raise web.HTTPSeeOther(target)

    async def _pay_cancel(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["sid"])
        if session is None:
            return _page(404, "<p>Unknown checkout session.</p>")
        if session["cancel_url"]:
            raise web.HTTPSeeOther(session["cancel_url"])
        return _page(200, "<p>You may close this page.</p>")

    # -- webhooks -------------------------------------------------------------------------

    async def _deliver_forever(self) -> None:
        while True:
            event_id = await self._queue.get()
            try:
                body = self._bodies[event_id]
                signature = self.sign(body, self._now() + self.webhook_time_offset)
                self._signatures[event_id] = signature
                await self._post_event(event_id, signature)
            finally:
                self._queue.task_done()

    async def _post_event(self, event_id: str, signature: str) -> int | str:
        result: int | str
        if self.drop_webhooks or self.webhook_url is None or self._client is None:
            result = "dropped"
        else:
            try:
                async with self._client.post(
                    self.webhook_url,
                    data=self._bodies[event_id],
                    headers={
                        "Content-Type": "application/json; charset=utf-8",
                        "Stripe-Signature": signature,
                        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                    },
                ) as resp:
                    await resp.read()
                    result = resp.status
            except (aiohttp.ClientError, TimeoutError) as e:
                result = f"error: {type(e).__name__}"
        self.deliveries.append(Delivery(event_id, result, signature))
        return result


def _public(session: JSON) -> JSON:
    return {k: v for k, v in session.items() if not k.startswith("_")}


def _answer(status: int, body: JSON) -> web.Response:
    resp = web.json_response(body, status=status)
    resp.headers["Request-Id"] = "req_" + secrets.token_hex(8)
    return resp


def _error(status: int, message: str, type_: str = "invalid_request_error") -> web.Response:
    return _answer(status, {"error": {"type": type_, "message": message}})


def _failure_body(status: int) -> tuple[int, JSON]:
    if status == 429:
        return 429, {
            "error": {
                "type": "invalid_request_error",
                "code": "rate_limit",
                "message": "Too many requests hit the API too quickly.",
            }
        }
    if status == 402:
        return 402, {
            "error": {
                "type": "card_error",
                "code": "card_declined",
                "message": "Your card was declined.",
            }
        }
    if status >= 500:
        return status, {
            "error": {"type": "api_error", "message": "An unknown error occurred on Stripe's side."}
        }
    return status, {
        "error": {
            "type": "invalid_request_error",
            "code": "parameter_invalid",
            "message": "The stand-in was told to refuse this call.",
        }
    }


def _page(status: int, body: str) -> web.Response:
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>Stripe Checkout (stand-in)</title></head>"
        f"<body>{body}</body></html>"
    )
    return web.Response(status=status, text=text, content_type="text/html")
