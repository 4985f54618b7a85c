"""What peers send us, validated strictly: Credentials and Tokens (more with commands).

An invalid object is answered OCPI 2001 with a message naming each offending field, and
nothing is stored. Types are strict (a number is not a string, `"yes"` is not a boolean).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from .transport import INVALID_PARAMETERS, OcpiError, ocpi_time, parse_ocpi_time

CiString = Annotated[str, Field(pattern=r"^[\x20-\x7e]*$")]
PrintableToken = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[!-~]+$")]
Url = Annotated[str, Field(max_length=255, pattern=r"^https?://\S+$")]
Role = Literal["CPO", "EMSP", "HUB", "NAP", "NSP", "OTHER", "SCSP"]
TokenType = Literal["AD_HOC_USER", "APP_USER", "OTHER", "RFID"]
WhitelistType = Literal["ALWAYS", "ALLOWED", "ALLOWED_OFFLINE", "NEVER"]
ProfileType = Literal["CHEAP", "FAST", "GREEN", "REGULAR"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Image(_Strict):
    url: Url
    thumbnail: Url | None = None
    category: Literal["CHARGER", "ENTRANCE", "LOCATION", "NETWORK", "OPERATOR", "OTHER", "OWNER"]
    type: CiString = Field(max_length=4)
    width: int | None = Field(None, ge=0, le=99999)
    height: int | None = Field(None, ge=0, le=99999)


class BusinessDetails(_Strict):
    name: str = Field(min_length=1, max_length=100)
    website: Url | None = None
    logo: Image | None = None


class CredentialsRole(_Strict):
    role: Role
    business_details: BusinessDetails
    party_id: CiString = Field(pattern=r"^[A-Za-z0-9]{3}$")
    country_code: CiString = Field(pattern=r"^[A-Za-z]{2}$")


class Credentials(_Strict):
    token: PrintableToken
    url: Url
    roles: list[CredentialsRole] = Field(min_length=1)

    @field_validator("roles")
    @classmethod
    def _unique(cls, roles: list[CredentialsRole]) -> list[CredentialsRole]:
        keys = [(r.role, r.party_id.upper(), r.country_code.upper()) for r in roles]
        if len(set(keys)) != len(keys):
            raise ValueError("each (role, party_id, country_code) may appear once")
        return roles


class EnergyContract(_Strict):
    supplier_name: str = Field(max_length=64)
    contract_id: str | None = Field(None, max_length=64)


class _TokenFields(_Strict):
    """Token fields with their OCPI 2.2.1 types; all optional here, see Token below."""

    country_code: CiString | None = Field(None, pattern=r"^[A-Za-z]{2}$")
    party_id: CiString | None = Field(None, pattern=r"^[A-Za-z0-9]{3}$")
    uid: CiString | None = Field(None, min_length=1, max_length=36)
    type: TokenType | None = None
    contract_id: CiString | None = Field(None, min_length=1, max_length=36)
    visual_number: str | None = Field(None, max_length=64)
    issuer: str | None = Field(None, min_length=1, max_length=64)
    group_id: CiString | None = Field(None, max_length=36)
    valid: bool | None = None
    whitelist: WhitelistType | None = None
    language: str | None = Field(None, pattern=r"^[a-z]{2}$")
    default_profile_type: ProfileType | None = None
    energy_contract: EnergyContract | None = None
    last_updated: str | None = None

    @field_validator("last_updated")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        return None if v is None else ocpi_time(parse_ocpi_time(v))


class Token(_TokenFields):
    """A full Token (PUT): every required field present."""

    country_code: CiString = Field(pattern=r"^[A-Za-z]{2}$")
    party_id: CiString = Field(pattern=r"^[A-Za-z0-9]{3}$")
    uid: CiString = Field(min_length=1, max_length=36)
    type: TokenType
    contract_id: CiString = Field(min_length=1, max_length=36)
    issuer: str = Field(min_length=1, max_length=64)
    valid: bool
    whitelist: WhitelistType
    last_updated: str

    @field_validator("last_updated")
    @classmethod
    def _time(cls, v: str) -> str:
        return ocpi_time(parse_ocpi_time(v))


class TokenPatch(_TokenFields):
    """A PATCH: any fields, but `last_updated` is required."""

    last_updated: str

    @field_validator("last_updated")
    @classmethod
    def _time(cls, v: str) -> str:
        return ocpi_time(parse_ocpi_time(v))


def describe(exc: ValidationError) -> str:
    """One line naming every invalid field."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] == "missing":
            msg = "required"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse(model: type[BaseModel], body: Any) -> Any:
    """Validate ``body`` or raise OcpiError 2001 naming the fields."""
    if not isinstance(body, dict):
        raise OcpiError(INVALID_PARAMETERS, "the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise OcpiError(INVALID_PARAMETERS, f"invalid {model.__name__}: {describe(e)}") from None


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)
