"""What the operator API and the web interface both do, written once.

Each use case validates, stores and announces; a refusal is a :class:`Refused` that says
why (an HTTP status, an error code, a message, the fields at fault), which the API turns
into its JSON error and the web interface into its form's error list. So a station defined
through a form and one defined through ``PUT /api/v1/stations/{id}`` pass the same checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from pydantic import ValidationError

from .commands import CommandError, CommandPort, StationOffline
from .events import StationDefined
from .guard import station_password_refusal
from .handlers import Services
from .model import IdTagDef, StationDef
from .passwords import hash_password
from .store import Store
from .timeparse import parse_api_time

log = structlog.get_logger("csms.usecases")

Field = dict[str, str]  # {"field": "location.id", "message": "..."}


class Refused(Exception):
    """A use case refused its input; nothing was stored."""

    def __init__(self, status: int, code: str, message: str, fields: list[Field] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or []


def validation_fields(exc: ValidationError) -> list[Field]:
    """A model's validation errors as fields, the shape both interfaces show."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        out.append({"field": loc, "message": msg})
    return out


# ---------------------------------------------------------------------- stations

STATION_ID_RULE = "a charge point id is 1 to 255 characters, no '/'"


def check_station_id(station_id: str) -> None:
    """A charge point id must fit a URL path segment and the OCPP endpoint's path."""
    if not station_id or len(station_id) > 255 or "/" in station_id:
        raise Refused(
            422,
            "invalid_id",
            STATION_ID_RULE,
            [{"field": "station_id", "message": STATION_ID_RULE}],
        )


async def define_station(
    services: Services, station_id: str, body: Any, *, new: bool = False, user: str | None = None
) -> bool:
    """Validate and store a station's definition (the body of ``PUT
    /api/v1/stations/{id}``), then announce it (:class:`StationDefined`). ``new``: refuse
    an id that exists. Returns whether the station was created."""
    check_station_id(station_id)
    store = services.store
    current = await store.stations.auth(station_id)
    if new and current is not None:
        message = f"station {station_id} exists already"
        raise Refused(409, "exists", message, [{"field": "station_id", "message": message}])
    if current is not None and current["retired_at"] is not None:
        message = (
            f"station {station_id} is retired: a retired charge point id is not defined again "
            "(define the hardware under a new id, Location id and EVSE uids)"
        )
        raise Refused(409, "retired", message, [{"field": "station_id", "message": message}])
    if isinstance(body, dict) and isinstance(body.get("evses"), list):
        # (a station's view shows when each retired EVSE was retired: a body read back from
        # it is taken; only the retire action retires, and _keep_removed_evses keeps them)
        body = {
            **body,
            "evses": [
                {k: v for k, v in e.items() if k != "removed_at"} if isinstance(e, dict) else e
                for e in body["evses"]
            ],
        }
    try:
        station = StationDef.model_validate(body)
    except ValidationError as e:
        raise Refused(
            422, "invalid_body", "the station definition is invalid", validation_fields(e)
        ) from None
    keep_password = isinstance(body, dict) and "password" not in body
    profile = station.security_profile or (current and current["security_profile"]) or 1
    if refusal := station_password_refusal(
        # (profile 3 authenticates with the client certificate: no password needed)
        services.settings.ocpp.require_password and profile != 3,
        station.password is not None,
        keep_password,
        bool(current and current["password_hash"]),
    ):
        raise Refused(
            422, "password_required", refusal, [{"field": "password", "message": refusal}]
        )
    if refusal := profile_password_refusal(
        profile,
        station.password is not None,
        keep_password,
        bool(current and current["password_hash"]),
    ):
        raise Refused(
            422, "password_required", refusal, [{"field": "password", "message": refusal}]
        )
    definition = station.definition()
    if current is not None:
        definition = await _keep_removed_evses(store, station_id, definition)
    password_hash = None
    if station.password is not None:  # slow on purpose: off the event loop
        password_hash = await asyncio.to_thread(hash_password, station.password)
    try:
        created = await store.stations.put(
            station_id,
            station.location.id,
            definition,
            {e["connector_id"]: e["uid"] for e in definition["evses"]},  # type: ignore[index]
            password_hash,
            keep_password,
            station.boot_status,
            events=lambda created: [StationDefined(station_id, services.clock.now(), created)],
            security_profile=station.security_profile,
        )
    except ValueError as e:  # a Location id or an EVSE uid of another station
        raise Refused(
            409, "conflict", str(e), [{"field": "location.id / evses.uid", "message": str(e)}]
        ) from None
    log.info("station defined", station_id=station_id, created=created, user=user)
    return created


async def _keep_removed_evses(
    store: Store, station_id: str, definition: dict[str, Any]
) -> dict[str, Any]:
    """A new definition of a station keeps the EVSEs retired before (OCPI keeps a REMOVED
    EVSE for good): one named again stays retired, one left out is kept as it was. A
    retired EVSE's connector id under another uid is refused (409)."""
    row = await store.stations.get(station_id)
    old = (row or {}).get("definition") or {}
    removed = [e for e in old.get("evses") or [] if e.get("removed_at")]
    if not removed:
        return definition
    evses = [dict(e) for e in definition["evses"]]
    by_cid = {e["connector_id"]: e for e in evses}
    for gone in removed:
        new = by_cid.get(gone["connector_id"])
        if new is None:
            evses.append(gone)
        elif str(new["uid"]).upper() != str(gone["uid"]).upper():
            message = (
                f"connector {gone['connector_id']} was EVSE {gone['uid']}, retired: it is "
                "not used again under another uid"
            )
            raise Refused(409, "evse_retired", message, [{"field": "evses", "message": message}])
        else:
            new["removed_at"] = gone["removed_at"]
    evses.sort(key=lambda e: e["connector_id"])
    return {**definition, "evses": evses}


RETIRE_OUTCOMES = {
    "not_found": (404, "not_found", "no defined station {station_id!r}"),
    "unknown_evse": (404, "not_found", "station {station_id} has no such EVSE"),
    "already": (409, "already_retired", "retired already"),
}


async def retire_station(
    services: Services,
    station_id: str,
    *,
    evse: str | None = None,
    reason: str | None = None,
    force: bool = False,
    user: str | None = None,
) -> dict[str, Any]:
    """Retire a station (``evse`` None) or one of its EVSEs (its uid or OCPP connector id).

    Its history stays; each EVSE retired is published REMOVED to the OCPI peers (the
    :class:`StationDefined` this announces makes the bridge PUT the Location); a station
    retired is refused at the handshake from then on, and the node holding its connection,
    whichever it is, closes it when that event reaches it (csms.app). Refused (409) while a
    transaction is open on what is retired: stop it first. ``force`` does not override that
    (a transaction cut off from its station could never be stopped by it nor billed right);
    it is accepted and said so. Returns what was done."""
    store = services.store
    if reason is not None:
        reason = reason.strip()[:200] or None
    connector_ids: tuple[int, ...] | None = None
    row = await store.stations.get(station_id)
    if row is None or not row["defined"]:
        raise Refused(404, "not_found", f"no defined station {station_id!r}")
    if evse is not None:
        evses = (row["definition"] or {}).get("evses") or []
        match = [e["connector_id"] for e in evses if str(e["uid"]).upper() == evse.upper()]
        match += [e["connector_id"] for e in evses if str(e["connector_id"]) == evse]
        if not match:
            raise Refused(404, "not_found", f"station {station_id} has no EVSE {evse[:64]!r}")
        connector_ids = (match[0],)
    now = services.clock.now()
    result = await store.stations.retire(
        station_id,
        connector_ids,
        reason,
        events=lambda r: [StationDefined(station_id, now, False)] if r["outcome"] == "done" else [],
    )
    outcome = result["outcome"]
    if outcome == "open_transaction":
        ids = ", ".join(str(i) for i in result["open"][:10])
        message = (
            f"a transaction is open on what would be retired ({ids}): stop it first "
            "(RemoteStopTransaction, or close it as stuck)"
        )
        if force:
            message += "; force does not retire an EVSE under an open transaction"
        raise Refused(409, "open_transaction", message)
    if outcome in RETIRE_OUTCOMES:
        status, code, text = RETIRE_OUTCOMES[outcome]
        raise Refused(status, code, text.format(station_id=station_id))
    log.info(
        "station retired" if result["retired"] else "EVSE retired",
        station_id=station_id,
        connector_ids=result["removed"],
        reason=reason,
        user=user,
    )
    return {
        "station_id": station_id,
        "removed_connector_ids": result["removed"],
        "station_retired": result["retired"],
    }


def profile_password_refusal(
    profile: int, password_given: bool, keeps_password: bool, has_password: bool
) -> str | None:
    """Why a definition at security profile 2 must be refused (TLS + Basic auth needs a
    password), or None."""
    if profile != 2 or password_given or (keeps_password and has_password):
        return None
    return (
        'security profile 2 is TLS with Basic auth: the station needs a password ("password": '
        '"...", at least 8 characters)'
    )


async def security_profile_raise(
    services: Services,
    commands: CommandPort,
    station_id: str,
    profile: int,
    *,
    user: str | None = None,
) -> dict[str, Any]:
    """Ask a connected station to move up to security ``profile`` (ChangeConfiguration
    SecurityProfile). The raise is recorded as pending before the request is sent (a
    station may reconnect at once at the new profile) and forgotten unless the station
    answers Accepted. Returns the station's row; a refusal is a :class:`Refused` (409)."""
    settings = services.settings
    store = services.store
    row = await store.stations.get(station_id)
    if row is None:
        raise Refused(404, "not_found", f"no station {station_id!r}")
    current = row["security_profile"] or 1
    why = None
    if profile <= current:
        why = f"the station is at security profile {current} already (a raise only)"
    elif profile >= 2 and not settings.ocpp.tls and not settings.ocpp.trusted_proxies:
        why = (
            f"security profile {profile} needs TLS: ocpp.tls is off and no TLS proxy is "
            "configured (ocpp.trusted_proxies)"
        )
    elif profile == 3 and not (settings.ocpp.tls and settings.tls.station_ca_file):
        why = (
            "security profile 3 needs csms's own TLS (ocpp.tls) and the stations' CA "
            "(tls.station_ca_file)"
        )
    elif profile == 2 and not row["password_hash"]:
        why = "security profile 2 uses Basic auth: give the station a password first"
    if why is not None:
        raise Refused(409, "profile_refused", why)
    await store.stations.set_pending_security_profile(station_id, profile)
    payload = {"key": "SecurityProfile", "value": str(profile)}
    answer: Any = None
    try:
        answer = await commands.send(station_id, "ChangeConfiguration", payload)
    except CommandError as e:
        await _forget_pending(store, station_id, profile)
        if isinstance(e, StationOffline):
            raise Refused(
                409, "station_offline", f"station {station_id} is not connected"
            ) from None
        raise Refused(409, e.code, f"ChangeConfiguration SecurityProfile failed: {e}") from None
    status = answer.get("status") if isinstance(answer, dict) else None
    if status != "Accepted":
        await _forget_pending(store, station_id, profile)
        raise Refused(
            409, "station_refused", f"the station answered {str(status)[:40]}, not Accepted"
        )
    log.info(
        "security profile raise accepted by the station: pending until it connects at it",
        station_id=station_id,
        security_profile=current,
        pending_security_profile=profile,
        user=user,
    )
    fresh = await store.stations.get(station_id)
    return fresh or row


async def _forget_pending(store: Store, station_id: str, profile: int) -> None:
    row = await store.stations.get(station_id)
    if row is not None and row["pending_security_profile"] == profile:
        await store.stations.set_pending_security_profile(station_id, None)


# ---------------------------------------------------------------------- id tags

ID_TAG_RULE = "an OCPP idTag is 1 to 20 characters"


async def put_id_tag(
    store: Store,
    id_tag: str,
    body: Any,
    parse_expiry: Callable[[str], datetime | None] = parse_api_time,
    *,
    user: str | None = None,
) -> bool:
    """Validate and store an id tag (the body of ``PUT /api/v1/id-tags/{id_tag}``). Its
    ``expiry_date`` is read by ``parse_expiry`` (ISO 8601 by default; the web form's is a
    local time). Every problem is named at once. Returns whether the tag was created."""
    fields: list[Field] = []
    if not 1 <= len(id_tag) <= 20:
        fields.append({"field": "id_tag", "message": ID_TAG_RULE})
    tag: IdTagDef | None = None
    try:
        tag = IdTagDef.model_validate(body)
    except ValidationError as e:
        fields.extend(validation_fields(e))
    expiry = None
    if tag is not None and tag.expiry_date:
        try:
            expiry = parse_expiry(tag.expiry_date)
        except ValueError as e:
            fields.append({"field": "expiry_date", "message": str(e) or "not a date and time"})
    if fields or tag is None:
        if fields[0]["field"] == "id_tag":
            raise Refused(422, "invalid_id", ID_TAG_RULE, fields)
        raise Refused(422, "invalid_body", "the id tag is invalid", fields)
    created = await store.id_tags.put(id_tag, tag.status, expiry, tag.parent_id_tag)
    log.info("id tag saved", id_tag=id_tag, status=tag.status, created=created, user=user)
    return created
