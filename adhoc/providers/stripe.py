"""The ``stripe`` provider: a hold is a Stripe Checkout Session whose PaymentIntent is
captured later (``capture_method=manual``), through Stripe's official client library.

How the interface maps onto Stripe:

- :meth:`StripeProvider.create_hold` creates a Checkout Session (one line item, the hold's
  amount) and answers its id as the hold's reference and its hosted page as the redirect.
  The idempotency key is ``hold-<payment_id>``: the same payment never makes two sessions.
- :meth:`StripeProvider.hold_state` reads the session and its PaymentIntent (expanded, with
  its latest charge): ``requires_capture`` is AUTHORIZED, ``succeeded`` CAPTURED,
  ``canceled`` RELEASED (DECLINED when no authorisation ever succeeded); a session still
  open without a usable intent is PENDING, an expired one DECLINED.
- :meth:`StripeProvider.capture` captures ``amount_to_capture`` (Stripe releases the rest);
  a hold already captured answers its state and is never captured twice.
- :meth:`StripeProvider.release` cancels an authorised intent, or expires a session the
  driver has not paid (Stripe allows cancelling a Checkout Session's intent only when it
  is ``requires_capture``; otherwise the session must be expired).
- :meth:`StripeProvider.verify_webhook` checks ``Stripe-Signature`` with the library and the
  replay window against the injected ``now``. The reference is the Checkout Session id
  everywhere, so only ``checkout.session.*`` events concern a hold: a PaymentIntent event
  does not name its session, and it is answered as None (the worker polls ``hold_state``).

The secrets (``CSMS_ADHOC_STRIPE_SECRET_KEY``, ``CSMS_ADHOC_STRIPE_WEBHOOK_SECRET``) come
from the environment only, are kept as :class:`pydantic.SecretStr` and never logged.

Payment methods: Stripe allows a later capture in Checkout only for the types in
:data:`MANUAL_CAPTURE_METHODS` (cards, and wallets paid by card such as Apple Pay and Google
Pay, among them). MB WAY is not one of them (Stripe: "Manual capture support: No"), so it
cannot hold an amount for a charge whose cost is not known yet, and it is refused here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import stripe
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from csms.ports import ConfigError

from .base import (
    Hold,
    HoldRequest,
    HoldState,
    HoldStatus,
    ProviderError,
    WebhookEvent,
    WebhookRejected,
)

log = structlog.get_logger("adhoc.stripe")
# the client library logs every request at INFO (URLs, and bodies with the driver's e-mail
# at DEBUG): our own lines say what happened, without them
logging.getLogger("stripe").setLevel(logging.WARNING)

SECRET_KEY_ENV = "CSMS_ADHOC_STRIPE_SECRET_KEY"
WEBHOOK_SECRET_ENV = "CSMS_ADHOC_STRIPE_WEBHOOK_SECRET"

# Checkout's payment method types that allow capture_method=manual (Stripe's changelog
# 2025-09-30.clover, "capture method for specific payment methods with the Checkout
# Sessions API"). MB WAY (mb_way) is not among them.
MANUAL_CAPTURE_METHODS = frozenset(
    {
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
)

WEBHOOK_TOLERANCE = 300  # seconds, Stripe's own default
MAX_WEBHOOK_BYTES = 1_000_000
_SESSION_ID = re.compile(r"^cs_[A-Za-z0-9_]{1,250}$")
_INTENT_ID = re.compile(r"^pi_[A-Za-z0-9_]{1,250}$")
_KEY_MAX = 200  # Stripe takes up to 255; we append "-cancel" / "-expire"
_UNEXPECTED_STATE = "payment_intent_unexpected_state"

# the events that concern a hold (the reference is the Checkout Session's id)
_SESSION_EVENTS = {
    # a completed session in manual capture mode is "unpaid": its intent says whether the
    # amount is held, and the event does not carry it expanded; the worker asks hold_state
    "checkout.session.completed": HoldStatus.PENDING,
    "checkout.session.async_payment_succeeded": HoldStatus.PENDING,
    "checkout.session.async_payment_failed": HoldStatus.DECLINED,
    "checkout.session.expired": HoldStatus.DECLINED,
}


class StripeSettings(BaseModel):
    """What the provider needs. The secrets are read from the environment by
    :meth:`from_env`; the rest comes from ``[adhoc.stripe]``."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    secret_key: SecretStr
    webhook_secret: SecretStr
    # Stripe's API by default; a test points it at its local stand-in
    api_base: str | None = Field(None, pattern=r"^https?://[^/\s]+/?$")
    methods: list[str] = Field(default_factory=lambda: ["card"], min_length=1, max_length=8)
    timeout: float = Field(20.0, gt=0, le=120)
    # the library's own retries of a failed call (with the same idempotency key)
    max_network_retries: int = Field(1, ge=0, le=5)

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value()
        if not re.fullmatch(r"(sk|rk)_[A-Za-z0-9_]{8,250}", raw):
            raise ValueError("not a Stripe secret key (sk_... or rk_..., letters and digits)")
        return v

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, v: SecretStr) -> SecretStr:
        if not re.fullmatch(r"whsec_[A-Za-z0-9_+/=]{8,250}", v.get_secret_value()):
            raise ValueError("not a Stripe webhook signing secret (whsec_...)")
        return v

    @field_validator("api_base")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        for method in v:
            if method not in MANUAL_CAPTURE_METHODS:
                raise ValueError(
                    f"{method!r}: Stripe cannot hold an amount with this payment method "
                    f"(manual capture); use some of {sorted(MANUAL_CAPTURE_METHODS)}"
                )
        if len(set(v)) != len(v):
            raise ValueError("a payment method is named twice")
        return v

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        api_base: str | None = None,
        methods: list[str] | None = None,
        timeout: float = 20.0,
        max_network_retries: int = 1,
    ) -> StripeSettings:
        """The secrets from ``environ`` (default: the process's environment); raises
        :class:`ConfigError` naming what is missing or wrong, never a secret's value."""
        env = os.environ if environ is None else environ
        missing = [name for name in (SECRET_KEY_ENV, WEBHOOK_SECRET_ENV) if not env.get(name)]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} must be set: the Stripe provider's secrets come "
                "from the environment only"
            )
        try:
            return cls(
                secret_key=SecretStr(env[SECRET_KEY_ENV].strip()),
                webhook_secret=SecretStr(env[WEBHOOK_SECRET_ENV].strip()),
                api_base=api_base,
                methods=list(methods) if methods is not None else ["card"],
                timeout=timeout,
                max_network_retries=max_network_retries,
            )
        except ValidationError as e:
            names = {"secret_key": SECRET_KEY_ENV, "webhook_secret": WEBHOOK_SECRET_ENV}
            lines = []
            for err in e.errors():
                field = str(err["loc"][0]) if err["loc"] else "?"
                where = names.get(field, f"adhoc.stripe.{field}")
                lines.append(f"{where}: {err['msg']}")
            raise ConfigError("\n".join(lines)) from None


class StripeProvider:
    """:class:`adhoc.providers.base.Provider` on Stripe Checkout with manual capture."""

    name = "stripe"

    def __init__(self, settings: StripeSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._client: stripe.StripeClient | None = None

    def __repr__(self) -> str:
        return f"StripeProvider(api_base={self.settings.api_base!r})"

    # -- the library's client, made in the running loop --------------------------------

    def _stripe(self) -> stripe.StripeClient:
        if self._client is None:
            ctx = ssl.create_default_context(cafile=stripe.ca_bundle_path)
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
            http = stripe.AIOHTTPClient(
                session=self._session, timeout=aiohttp.ClientTimeout(total=self.settings.timeout)
            )
            bases: dict[str, Any] = {}
            if self.settings.api_base:
                bases = {"api": self.settings.api_base}
            self._client = stripe.StripeClient(
                self.settings.secret_key.get_secret_value(),
                base_addresses=bases,  # type: ignore[arg-type]
                http_client=http,
                max_network_retries=self.settings.max_network_retries,
            )
        return self._client

    async def close(self) -> None:
        session, self._session, self._client = self._session, None, None
        if session is not None:
            await session.close()

    def _error(self, e: BaseException, doing: str) -> ProviderError:
        """A library (or transport) failure as a ProviderError whose message names no
        secret."""
        if isinstance(e, stripe.StripeError):
            status = e.http_status
            retryable = isinstance(e, stripe.APIConnectionError | stripe.RateLimitError) or (
                isinstance(e, stripe.APIError)
                and (status is None or status >= 500 or status == 409)
            )
            detail = e.user_message or str(e) or type(e).__name__
            code = f" ({e.code})" if e.code else ""
            text = f"Stripe {doing}: {type(e).__name__}{code}: {detail}"
        elif isinstance(e, aiohttp.ClientError | TimeoutError | OSError):
            retryable = True
            text = f"Stripe {doing}: network error ({type(e).__name__})"
        else:  # an answer the library could read but we cannot
            retryable = False
            text = f"Stripe {doing}: unexpected answer ({type(e).__name__}: {e})"
        for secret in (self.settings.secret_key, self.settings.webhook_secret):
            text = text.replace(secret.get_secret_value(), "***")
        return ProviderError(text[:1000], retryable=retryable)

    # -- the provider ---------------------------------------------------------------------

    async def create_hold(self, req: HoldRequest) -> Hold:
        methods = list(req.methods)
        problems = _hold_request_problems(req)
        if problems:
            raise ProviderError(f"Stripe hold refused: {problems}", retryable=False)
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": req.currency.lower(),
                        "unit_amount": req.amount,
                        "product_data": {"name": req.description},
                    },
                }
            ],
            "payment_intent_data": {
                "capture_method": "manual",
                "description": req.description,
                "metadata": {"payment_id": req.payment_id},
            },
            "metadata": {"payment_id": req.payment_id},
            "client_reference_id": req.payment_id,
            "success_url": req.return_url,
            "cancel_url": req.cancel_url,
            "locale": "pt" if req.language == "pt" else "en",
            "payment_method_types": methods,
        }
        if req.email:
            params["customer_email"] = req.email
        try:
            session = await self._stripe().v1.checkout.sessions.create_async(
                params,  # type: ignore[arg-type]
                {"idempotency_key": f"hold-{req.payment_id}"},
            )
        except Exception as e:
            raise self._error(e, "create hold") from e
        data = session.to_dict()
        ref, url = data.get("id"), data.get("url")
        if not isinstance(ref, str) or not _SESSION_ID.match(ref) or not isinstance(url, str):
            raise ProviderError("Stripe create hold: the session has no id or url", retryable=False)
        log.info("stripe hold created", payment_id=req.payment_id, reference=ref)
        return Hold(reference=ref, status=HoldStatus.PENDING, redirect_url=url)

    async def hold_state(self, reference: str) -> HoldState:
        session = await self._read(reference)
        return _state_of(session)

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> HoldState:
        _check_key(idempotency_key)
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise ProviderError(
                f"Stripe capture: the amount must be a positive integer, not {amount!r}",
                retryable=False,
            )
        session = await self._read(reference)
        state = _state_of(session)
        if state.status == HoldStatus.CAPTURED:
            return state  # captured already: never twice
        if state.status != HoldStatus.AUTHORIZED:
            raise ProviderError(
                f"Stripe capture: nothing is held (the hold is {state.status})", retryable=False
            )
        if amount > state.amount_held:
            raise ProviderError(
                f"Stripe capture: {amount} is more than the {state.amount_held} held",
                retryable=False,
            )
        intent = _intent(session)
        if intent is None or not isinstance(intent.get("id"), str):
            raise ProviderError("Stripe capture: a held session without an intent", retryable=False)
        intent_id = intent["id"]
        try:
            await self._stripe().v1.payment_intents.capture_async(
                intent_id,
                {"amount_to_capture": amount},
                {"idempotency_key": idempotency_key},
            )
        except stripe.InvalidRequestError as e:
            if e.code != _UNEXPECTED_STATE:
                raise self._error(e, "capture") from e
            # captured (or released) meanwhile: the state says which
            state = await self.hold_state(reference)
            if state.status == HoldStatus.CAPTURED:
                return state
            raise self._error(e, "capture") from e
        except Exception as e:
            raise self._error(e, "capture") from e
        log.info("stripe hold captured", reference=reference, amount=amount)
        return await self.hold_state(reference)

    async def release(self, reference: str, idempotency_key: str) -> HoldState:
        _check_key(idempotency_key)
        # twice at most: a driver who pays while the session is being expired leaves an
        # authorised intent to cancel
        for _ in range(2):
            session = await self._read(reference)
            state = _state_of(session)
            intent = _intent(session)
            if state.status in (HoldStatus.CAPTURED, HoldStatus.RELEASED, HoldStatus.DECLINED):
                return state
            if state.status == HoldStatus.AUTHORIZED and intent is not None:
                call = self._stripe().v1.payment_intents.cancel_async(
                    intent["id"], None, {"idempotency_key": f"{idempotency_key}-cancel"}
                )
                doing = "release (cancel)"
            else:  # PENDING: the driver has not paid; the session must be expired
                call = self._stripe().v1.checkout.sessions.expire_async(
                    reference, None, {"idempotency_key": f"{idempotency_key}-expire"}
                )
                doing = "release (expire)"
            try:
                await call
            except stripe.InvalidRequestError as e:
                # the state moved meanwhile (paid, expired, captured): read it again
                log.info("stripe release raced", reference=reference, code=e.code)
                continue
            except Exception as e:
                raise self._error(e, doing) from e
            log.info("stripe hold released", reference=reference, how=doing)
            return await self.hold_state(reference)
        state = await self.hold_state(reference)
        if state.status in (HoldStatus.CAPTURED, HoldStatus.RELEASED, HoldStatus.DECLINED):
            return state
        raise ProviderError(
            f"Stripe release: the hold is still {state.status} after two attempts", retryable=True
        )

    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], now: datetime
    ) -> WebhookEvent | None:
        header = None
        for name, value in headers.items():
            if name.lower() == "stripe-signature":
                header = value
        if not header:
            raise WebhookRejected("no Stripe-Signature header")
        if len(body) > MAX_WEBHOOK_BYTES:
            raise WebhookRejected(f"the body is larger than {MAX_WEBHOOK_BYTES} bytes")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise WebhookRejected("the body is not UTF-8") from None
        # the library checks the signature; its clock is not ours, so the age is checked
        # below against the injected ``now`` (tolerance None: no check of its own)
        try:
            stripe.WebhookSignature.verify_header(
                text, header, self.settings.webhook_secret.get_secret_value(), tolerance=None
            )
        except (stripe.SignatureVerificationError, TypeError, ValueError):
            # (the library's comparison raises TypeError on a non-ASCII signature)
            raise WebhookRejected("the Stripe-Signature does not match the body") from None
        signed_at = _signature_time(header)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        age = now.timestamp() - signed_at
        if abs(age) > WEBHOOK_TOLERANCE:
            raise WebhookRejected(
                f"signed {int(age)} s from now: outside the {WEBHOOK_TOLERANCE} s window"
            )
        try:
            event = json.loads(text)
        except ValueError:
            raise WebhookRejected("the body is not JSON") from None
        if (
            not isinstance(event, dict)
            or event.get("object") != "event"
            or not isinstance(event.get("id"), str)
            or not event["id"]
            or not isinstance(event.get("type"), str)
            or not isinstance(event.get("data"), dict)
            or not isinstance(event["data"].get("object"), dict)
        ):
            raise WebhookRejected("not a Stripe event (id, type, data.object)")
        status = _SESSION_EVENTS.get(event["type"])
        if status is None:
            return None  # another type, payment_intent.* among them (see the module's doc)
        obj = event["data"]["object"]
        ref = obj.get("id")
        if obj.get("object") != "checkout.session" or not isinstance(ref, str):
            raise WebhookRejected(f"a {event['type']} event without a Checkout Session")
        if not _SESSION_ID.match(ref):
            raise WebhookRejected("a Checkout Session id that is not one")
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict) or not metadata.get("payment_id"):
            return None  # a session of the account that is not an ad hoc hold
        return WebhookEvent(event_id=event["id"][:255], reference=ref, status=status)

    # -- reading --------------------------------------------------------------------------

    async def _read(self, reference: str) -> dict[str, Any]:
        if not isinstance(reference, str) or not _SESSION_ID.match(reference):
            raise ProviderError("Stripe: not a Checkout Session reference", retryable=False)
        try:
            session = await self._stripe().v1.checkout.sessions.retrieve_async(
                reference, {"expand": ["payment_intent", "payment_intent.latest_charge"]}
            )
        except Exception as e:
            raise self._error(e, "read hold") from e
        data = session.to_dict()
        intent = data.get("payment_intent")
        if isinstance(intent, str):  # not expanded: read it
            if not _INTENT_ID.match(intent):
                raise ProviderError("Stripe: a session with a bad intent id", retryable=False)
            try:
                pi = await self._stripe().v1.payment_intents.retrieve_async(
                    intent, {"expand": ["latest_charge"]}
                )
            except Exception as e:
                raise self._error(e, "read hold") from e
            data["payment_intent"] = pi.to_dict()
        return data


def _hold_request_problems(req: HoldRequest) -> str:
    """Why Stripe must not be asked for this hold ("" when it may)."""
    if not isinstance(req.amount, int) or isinstance(req.amount, bool) or req.amount <= 0:
        return f"the amount must be a positive integer, not {req.amount!r}"
    if not re.fullmatch(r"[A-Za-z]{3}", req.currency or ""):
        return f"not a currency code: {req.currency!r}"
    if not req.payment_id or len(req.payment_id) > _KEY_MAX - 5:
        return "the payment id is empty or too long"
    if not req.methods:
        return "no payment method"
    for method in req.methods:
        if method not in MANUAL_CAPTURE_METHODS:
            return f"{method!r} cannot hold an amount at Stripe (no manual capture)"
    if not req.description.strip():
        return "no description"
    for url in (req.return_url, req.cancel_url):
        if not re.match(r"^https?://", url or ""):
            return f"not an http(s) URL: {url!r}"
    return ""


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key or len(key) > _KEY_MAX or not key.isprintable():
        raise ProviderError(
            f"Stripe: an idempotency key is 1 to {_KEY_MAX} printable characters",
            retryable=False,
        )


def _signature_time(header: str) -> int:
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                return int(value)
            except ValueError:
                break
    raise WebhookRejected("the Stripe-Signature has no timestamp")


def _intent(session: dict[str, Any]) -> dict[str, Any] | None:
    intent = session.get("payment_intent")
    return intent if isinstance(intent, dict) else None


def _state_of(session: dict[str, Any]) -> HoldState:
    """The hold's state from a session whose intent (and its latest charge) is expanded."""
    intent = _intent(session)
    session_status = session.get("status")
    if intent is None:
        if session_status == "expired":
            return HoldState(HoldStatus.DECLINED, 0, 0)
        # open; or complete without an intent, which payment mode never is: ask again
        return HoldState(HoldStatus.PENDING, 0, 0)
    charge = intent.get("latest_charge")
    charge = charge if isinstance(charge, dict) else {}
    details = charge.get("payment_method_details")
    method = details.get("type") if isinstance(details, dict) else None
    method = method if isinstance(method, str) else None
    status = intent.get("status")
    try:
        capturable = int(intent.get("amount_capturable") or 0)
        received = int(intent.get("amount_received") or 0)
    except (TypeError, ValueError):
        raise ProviderError(
            "Stripe: an intent whose amounts are not numbers", retryable=False
        ) from None
    if status == "requires_capture":
        return HoldState(HoldStatus.AUTHORIZED, capturable, 0, method)
    if status == "succeeded":
        return HoldState(HoldStatus.CAPTURED, 0, received, method)
    if status == "canceled":
        authorized = charge.get("status") == "succeeded"
        return HoldState(HoldStatus.RELEASED if authorized else HoldStatus.DECLINED, 0, 0, method)
    # requires_payment_method (a refused card: the driver may try again), requires_action,
    # requires_confirmation, processing
    if session_status == "expired":
        return HoldState(HoldStatus.DECLINED, 0, 0, method)
    return HoldState(HoldStatus.PENDING, 0, 0, method)
