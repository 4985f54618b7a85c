"""The ``[adhoc]`` section: ad hoc charging (pay on the spot, no contract).

Secrets never come from the file: the Stripe keys are read from the environment
(``CSMS_ADHOC_STRIPE_SECRET_KEY``, ``CSMS_ADHOC_STRIPE_WEBHOOK_SECRET``).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from csms.ports import ConfigError


class Terminal(BaseModel):
    """A station with a payment terminal of its own: its ad hoc transactions are the ones
    whose id tag matches ``id_tag_pattern`` (a regular expression, whole tag); csms prices
    and receipts them, the terminal took the money."""

    model_config = ConfigDict(extra="forbid")

    station: str = Field(min_length=1, max_length=64)
    id_tag_pattern: str = Field(min_length=1, max_length=200)

    @field_validator("id_tag_pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        return v


class StripeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Stripe's API by default; a test points it at its local stand-in
    api_base: str | None = Field(None, pattern=r"^https?://[^/]+/?$")
    # payment method types offered on Stripe's page (those that allow a later capture)
    methods: list[str] = Field(default_factory=lambda: ["card"], min_length=1, max_length=8)
    timeout: float = Field(20.0, gt=0, le=120)


class AdhocSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # where drivers reach the public pages (the QR codes point here), e.g.
    # https://charge.example.pt; default: http://<http.host>:<http.port>
    public_url: str | None = Field(None, pattern=r"^https?://[^/]+/?$")
    provider: Literal["manual", "stripe"] = "manual"
    stripe: StripeConfig = StripeConfig()
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    # the amount held before a charge starts (in currency units, e.g. 30.00); the charge is
    # stopped when its cost reaches it
    hold_amount: Decimal = Field(Decimal("30.00"), gt=0, le=Decimal("1000"))
    # the receipt's issuer
    operator_name: str = Field(min_length=1, max_length=200)
    operator_tax_id: str = Field(min_length=1, max_length=32)
    operator_address: str = Field(min_length=1, max_length=300)
    receipt_prefix: str = Field("AH", pattern=r"^[A-Z0-9]{1,8}$")
    # seconds a driver has to confirm the payment (the EVSE is kept for them meanwhile)
    payment_window: int = Field(600, ge=60, le=3600)
    # seconds the station has to start once the payment is confirmed; then the hold is
    # released
    start_timeout: int = Field(180, ge=10, le=1800)
    # seconds between RunningCost messages to stations that show the price (costmsg)
    running_cost_interval: int = Field(60, ge=5, le=3600)
    # seconds between the worker's passes over open payments (a webhook or an event wakes it
    # earlier)
    poll_interval: float = Field(5.0, gt=0, le=300)
    # requests per minute per client address on the public pages (a driver's page polls
    # every 3 s: 20 a minute; several phones may share a carrier's address)
    public_rate_limit: int = Field(120, ge=5, le=100000)
    terminals: list[Terminal] = Field(default_factory=list, max_length=10000)

    @field_validator("public_url")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    def hold_minor(self) -> int:
        return int((self.hold_amount * 100).to_integral_value())


def load_adhoc_settings(raw: dict[str, Any]) -> AdhocSettings | None:
    """None when ad hoc charging is off (no ``[adhoc]`` section, or ``enabled = false``)."""
    if not raw or raw.get("enabled") is False:
        return None
    try:
        return AdhocSettings.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = "adhoc." + ".".join(str(p) for p in err["loc"])
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see config.example.toml)"
            elif err["type"] == "missing":
                msg = "required when ad hoc charging is enabled"
            lines.append(f"{key}: {msg}")
        raise ConfigError("\n".join(lines)) from None
