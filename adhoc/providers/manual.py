"""The ``manual`` provider, for pilots: no money moves through csms. A hold is confirmed at
once (the operator invoices later, or the charge is free); captures and releases are only
recorded, so the payments and receipts are the same as with a real provider."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from .base import Hold, HoldRequest, HoldState, HoldStatus, WebhookEvent, WebhookRejected


class ManualProvider:
    """Holds live in the payments table (the reference is the payment id): the state the
    worker keeps is the truth, so this provider only answers consistently."""

    name = "manual"

    def __init__(self) -> None:
        # reference -> (amount held, captured); lost on restart, which is harmless: the
        # payment's own state says what was done, and every call here is idempotent
        self._holds: dict[str, tuple[int, int, HoldStatus]] = {}

    async def create_hold(self, req: HoldRequest) -> Hold:
        self._holds.setdefault(req.payment_id, (req.amount, 0, HoldStatus.AUTHORIZED))
        return Hold(reference=req.payment_id, status=HoldStatus.AUTHORIZED, redirect_url=None)

    async def hold_state(self, reference: str) -> HoldState:
        held, captured, status = self._holds.get(reference, (0, 0, HoldStatus.AUTHORIZED))
        return HoldState(status, held if status == HoldStatus.AUTHORIZED else 0, captured)

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> HoldState:
        if amount <= 0:
            raise ValueError("a capture is of a positive amount")
        self._holds[reference] = (0, amount, HoldStatus.CAPTURED)
        return HoldState(HoldStatus.CAPTURED, 0, amount, "manual")

    async def release(self, reference: str, idempotency_key: str) -> HoldState:
        _, captured, status = self._holds.get(reference, (0, 0, HoldStatus.RELEASED))
        if status != HoldStatus.CAPTURED:
            self._holds[reference] = (0, 0, HoldStatus.RELEASED)
            return HoldState(HoldStatus.RELEASED, 0, 0, "manual")
        return HoldState(status, 0, captured, "manual")

    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], now: datetime
    ) -> WebhookEvent | None:
        raise WebhookRejected("the manual provider takes no notifications")

    async def close(self) -> None:
        return None
