"""The ``[smart]`` section: charging profiles and sites that share a grid connection."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from csms.ports import ConfigError


class SmartSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # the stack level of the profiles a site's load management sends (its TxProfiles and
    # the stations' safe TxDefaultProfile): the operator's own Tx/TxDefault profiles on a
    # site's stations must stay below it, or they would override the site's limit
    site_stack_level: int = Field(5, ge=1, le=100)
    # a share goes up only by at least this much (A): fewer messages; it goes down at once
    step_a: Decimal = Field(Decimal("1"), gt=0, le=10)
    # a car measured drawing this much (A) less than its share gives the rest away
    headroom_a: Decimal = Field(Decimal("2"), ge=0, le=32)
    # the fewest seconds between two recomputations of a site caused by meter values
    recompute_seconds: float = Field(15.0, ge=0, le=3600)
    # how often every site is looked at (time-of-day windows, expired dynamic limits)
    check_seconds: float = Field(60.0, gt=0, le=3600)
    # seconds a station has to answer a smart charging call
    call_timeout: float = Field(30.0, gt=0, le=300)
    # days of each site's per-minute power kept for its chart
    power_days: int = Field(35, ge=1, le=3660)


def load_smart_settings(raw: dict[str, Any]) -> SmartSettings | None:
    """None when smart charging is off: no ``[smart]`` section (an extension that is not
    asked for costs nothing, not even a delivery process), or ``enabled = false``."""
    if not raw or raw.get("enabled") is False:
        return None
    try:
        return SmartSettings.model_validate(raw or {})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = "smart." + ".".join(str(p) for p in err["loc"])
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see config.example.toml)"
            lines.append(f"{key}: {msg}")
        raise ConfigError("\n".join(lines)) from None
