"""The `[ocpi]` section of the configuration file."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from csms.ports import ConfigError

from .commissioning import NoticeSettings
from .pricing import TariffDef


class OcpiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    country_code: str = Field("PT", pattern=r"^[A-Z]{2}$")
    party_id: str = Field(pattern=r"^[A-Z0-9]{3}$", description="ours, e.g. from MOBI.E")
    business_name: str = Field(min_length=1, max_length=100)
    website: str | None = Field(None, max_length=255)
    # Where peers reach our OCPI endpoints (the TLS proxy in front of us), e.g.
    # https://ocpi.example.pt. Default: http://<http.host>:<http.port>.
    public_url: str | None = Field(None, pattern=r"^https?://[^/]+(/.*)?$")
    # An initial token A (also CSMS_OCPI__TOKEN_A); `csms ocpi token-a` makes more. Like
    # every token A it grants a role (HUB: MOBI.E's) for the parties listed ("PT/MOB"):
    # a registration with it may claim nothing else.
    token_a: str | None = Field(None, min_length=8, max_length=64, pattern=r"^[!-~]+$")
    token_a_role: Literal["HUB", "EMSP", "SCSP"] = "HUB"
    token_a_parties: list[str] = []
    # Let peers' URLs (versions, endpoints, response_url) lead to loopback, private or
    # link-local addresses. Off: a peer cannot make us call our own network (a test or
    # lab set-up on one machine turns it on).
    allow_private_peer_addresses: bool = False
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    page_limit: int = Field(100, ge=1, le=1000, description="X-Limit of our paginated GETs")
    request_timeout: float = Field(30.0, gt=0, description="seconds, for our calls to peers")
    # R7: a station silent this long has its EVSEs shown (and pushed) as UNKNOWN
    offline_after: int = Field(300, ge=1)
    # R5: an active Session is PATCHed this often (seconds)
    session_update_interval: int = Field(300, ge=1)
    # pushes to one peer in flight at once; seconds before a push counts as failed
    push_concurrency: int = Field(8, ge=1, le=256)
    push_timeout: float = Field(10.0, gt=0)
    # failed pushes are retried after 1, 2, 4 ... seconds, up to this, with jitter
    retry_max_seconds: float = Field(60.0, ge=1)
    # OCPI commands: how long a station has to do what was asked (the CommandResponse's
    # timeout); a real charger needs time to start a transaction
    command_timeout: int = Field(120, ge=1, le=3600)
    # real-time authorization (peers whose policy has realtime_auth): seconds to wait for the
    # eMSPs' answers to POST tokens/{uid}/authorize (a driver waits at the charger), and
    # seconds an answer is kept per (peer, card) (0: asked every time)
    realtime_auth_timeout: float = Field(5.0, ge=1, le=30)
    realtime_auth_cache: int = Field(300, ge=0, le=86400)
    # ChargingProfiles (for a peer granted SCSP): the fewest seconds between two requests of
    # one kind (set, get, clear) for one session by one peer (faster: TOO_OFTEN), and the
    # seconds the peer is told to wait for a result (the ChargingProfileResponse's timeout)
    charging_profile_interval: int = Field(10, ge=0, le=3600)
    charging_profile_timeout: int = Field(60, ge=1, le=3600)
    # Tariffs defined here ([[ocpi.tariffs]]) are stored at start; connectors reference
    # them by id in their tariff_ids. The API (PUT /api/v1/tariffs/{id}) defines more.
    tariffs: list[TariffDef] = []
    # R2: the commissioning e-mail to MOBI.E ([ocpi.notices]); without smtp_host, .eml files
    notices: NoticeSettings = NoticeSettings()

    @field_validator("party_id", "country_code", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("token_a_parties")
    @classmethod
    def _parties(cls, v: list[str]) -> list[str]:
        from .store import parse_party

        return ["/".join(parse_party(p)) for p in v]


MOBIE_OFFLINE_AFTER = 300  # rule R7: five minutes
MOBIE_SESSION_INTERVAL = 300  # rule R5: five minutes


def load_ocpi_settings(raw: dict[str, Any], mobie_mode: bool = True) -> OcpiSettings | None:
    """None when OCPI is turned off (``enabled = false`` or no ``[ocpi]`` section)."""
    if not raw or raw.get("enabled") is False:
        return None
    try:
        settings = OcpiSettings.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = "ocpi." + ".".join(str(p) for p in err["loc"])
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see config.example.toml)"
            elif err["type"] == "missing":
                msg = "required when OCPI is enabled"
            lines.append(f"{key}: {msg}")
        raise ConfigError("\n".join(lines)) from None
    if settings.token_a and not settings.token_a_parties:
        raise ConfigError(
            "ocpi.token_a_parties: required with ocpi.token_a (the parties the configured "
            'token A grants, e.g. ["PT/MOB"]; ocpi.token_a_role says HUB, EMSP or SCSP)'
        )
    if mobie_mode and settings.session_update_interval > MOBIE_SESSION_INTERVAL:
        raise ConfigError(
            f"ocpi.session_update_interval: {settings.session_update_interval} s breaks MOBI.E "
            f"rule R5 (Session PATCH at least every {MOBIE_SESSION_INTERVAL} s); use at most "
            f"{MOBIE_SESSION_INTERVAL} or set mobie_mode = false"
        )
    if mobie_mode and settings.offline_after > MOBIE_OFFLINE_AFTER:
        raise ConfigError(
            f"ocpi.offline_after: {settings.offline_after} s breaks MOBI.E rule R7 (UNKNOWN "
            f"after {MOBIE_OFFLINE_AFTER} s of silence); use at most {MOBIE_OFFLINE_AFTER} "
            "or set mobie_mode = false"
        )
    return settings
