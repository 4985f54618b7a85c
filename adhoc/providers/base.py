"""What ad hoc charging needs of a payment provider: a hold (pre-authorisation) the driver
confirms on the provider's page, its status, a capture of the final amount, a release, and
verified notifications (webhooks).

Amounts are integers in the currency's minor unit (cents). Every call that moves money takes
an idempotency key: the same key twice is one operation at the provider (a capture repeated
after ``kill -9`` captures once). A provider raises :class:`ProviderError` for anything it
could not do (network, refusal); ``retryable`` says whether trying again later may succeed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class HoldStatus(StrEnum):
    PENDING = "pending"  # the driver has not confirmed yet (or the provider is deciding)
    AUTHORIZED = "authorized"  # the amount is held and may be captured
    DECLINED = "declined"  # refused, abandoned or expired: nothing is held
    RELEASED = "released"  # was held, now let go
    CAPTURED = "captured"  # captured (all or part; the rest is released)


@dataclass(frozen=True, slots=True)
class HoldRequest:
    payment_id: (
        str  # ours (random, unique): the idempotency base and the provider's reference to us
    )
    amount: int  # minor units
    currency: str  # ISO 4217, e.g. EUR
    description: str  # shown to the driver by the provider (e.g. "Charging at LSB-00175-01")
    email: str | None  # the driver's, when given (receipts)
    return_url: str  # where the provider sends the driver after confirming
    cancel_url: str  # where the provider sends the driver who gives up
    language: str  # "pt" or "en"
    methods: tuple[str, ...] = ("card",)  # payment methods offered, provider's names


@dataclass(frozen=True, slots=True)
class Hold:
    reference: str  # the provider's id of this hold (kept with the payment)
    status: HoldStatus
    redirect_url: str | None  # where the driver confirms it; None: nothing to confirm


@dataclass(frozen=True, slots=True)
class HoldState:
    status: HoldStatus
    amount_held: int  # what may be captured now (0 unless AUTHORIZED)
    amount_captured: int  # captured so far
    method: str | None = None  # e.g. "card", "mb_way", when the provider says


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    event_id: str  # the provider's unique id of the notification (replays share it)
    reference: str  # the hold it concerns (Hold.reference)
    status: HoldStatus  # what it says of the hold now


class ProviderError(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class WebhookRejected(Exception):
    """A notification that must not be believed: bad or missing signature, too old (replay
    window), malformed. The message says which, without any secret."""


class Provider(Protocol):
    name: str  # its configuration name ("manual", "stripe")

    async def create_hold(self, req: HoldRequest) -> Hold:
        """Start a hold of ``req.amount``; idempotent on ``req.payment_id``."""

    async def hold_state(self, reference: str) -> HoldState:
        """Ask the provider (webhooks can be lost: the worker also polls)."""

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> HoldState:
        """Capture ``amount`` (> 0, at most what is held) and release the rest. Capturing a
        hold already captured with this key answers its state, and never captures twice."""

    async def release(self, reference: str, idempotency_key: str) -> HoldState:
        """Let the hold go (or abandon a hold not yet confirmed). Idempotent; releasing a
        hold that is already released or declined answers its state."""

    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], now: datetime
    ) -> WebhookEvent | None:
        """Check a notification's signature and age (raise WebhookRejected) and read it;
        None for a genuine notification that concerns no hold (another event type)."""

    async def close(self) -> None: ...
