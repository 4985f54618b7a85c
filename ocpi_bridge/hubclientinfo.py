"""OCPI 2.2.1 HubClientInfo, the CPO as Receiver (section 13): a hub tells us which parties it
connects and whether they are reachable (CONNECTED, OFFLINE, PLANNED, SUSPENDED).

Only a peer granted HUB whose policy lets it use ``hubclientinfo`` may call it (the server's
powers check); what it sends is kept per hub (``ocpi_hub_client_info``) and shown on its
peer page. It is information, never power: a hub's ClientInfo gives it no party, and who
receives which session stays the operator's grant (ocpi_bridge.peers).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import structlog

from .transport import INVALID_PARAMETERS, OcpiError, ocpi_time, parse_ocpi_time

if TYPE_CHECKING:
    from .store import OcpiStore, Peer

log = structlog.get_logger("ocpi.hubclientinfo")

ROLES = ("CPO", "EMSP", "HUB", "NAP", "NSP", "OTHER", "SCSP")
STATUSES = ("CONNECTED", "OFFLINE", "PLANNED", "SUSPENDED")
MAX_PER_HUB = 10_000  # a hub cannot grow the table beyond this
_CC = re.compile(r"^[A-Za-z]{2}$")
_PID = re.compile(r"^[A-Za-z0-9]{3}$")
FIELDS = ("party_id", "country_code", "role", "status", "last_updated")


def parse_client_info(body: Any, country_code: str, party_id: str) -> dict[str, str]:
    """A ClientInfo from a hub's PUT, checked against the URL (OCPI 2001 names the field)."""
    if not isinstance(body, dict):
        raise OcpiError(INVALID_PARAMETERS, "the body must be a ClientInfo object")
    missing = [f for f in FIELDS if f not in body]
    if missing:
        raise OcpiError(INVALID_PARAMETERS, f"{missing[0]}: required")
    cc, pid = body["country_code"], body["party_id"]
    if not isinstance(cc, str) or not _CC.match(cc):
        raise OcpiError(INVALID_PARAMETERS, "country_code: two letters")
    if not isinstance(pid, str) or not _PID.match(pid):
        raise OcpiError(INVALID_PARAMETERS, "party_id: three letters or digits")
    if cc.upper() != country_code.upper() or pid.upper() != party_id.upper():
        raise OcpiError(INVALID_PARAMETERS, "country_code/party_id differ from the URL's")
    if body["role"] not in ROLES:
        raise OcpiError(INVALID_PARAMETERS, f"role: one of {', '.join(ROLES)}")
    if body["status"] not in STATUSES:
        raise OcpiError(INVALID_PARAMETERS, f"status: one of {', '.join(STATUSES)}")
    if not isinstance(body["last_updated"], str):
        raise OcpiError(INVALID_PARAMETERS, "last_updated: a DateTime")
    try:
        updated = parse_ocpi_time(body["last_updated"])
    except ValueError as e:
        raise OcpiError(INVALID_PARAMETERS, f"last_updated: {e}") from None
    return {
        "country_code": cc.upper(),
        "party_id": pid.upper(),
        "role": body["role"],
        "status": body["status"],
        "last_updated": ocpi_time(updated),
    }


def client_info_object(row: dict[str, Any]) -> dict[str, Any]:
    return {f: row[f] for f in FIELDS}


class HubClientInfo:
    def __init__(self, store: OcpiStore) -> None:
        self.store = store

    async def put(self, hub: Peer, country_code: str, party_id: str, body: Any) -> bool:
        """Keep what the hub says of one party; True when it was new to us."""
        info = parse_client_info(body, country_code, party_id)
        known = await self.store.client_info(hub.id, info["country_code"], info["party_id"])
        if not any(r["role"] == info["role"] for r in known):
            if len(await self.store.client_info(hub.id, limit=MAX_PER_HUB)) >= MAX_PER_HUB:
                raise OcpiError(
                    INVALID_PARAMETERS, f"at most {MAX_PER_HUB} parties per hub are kept", 400
                )
        created = await self.store.put_client_info(hub.id, info)
        log.info(
            "hub client info",
            peer_id=hub.id,
            party=f"{info['country_code']}/{info['party_id']}",
            role=info["role"],
            status=info["status"],
        )
        return created

    async def get(self, hub: Peer, country_code: str, party_id: str) -> list[dict[str, Any]]:
        """What this hub told us of one party (one ClientInfo per role)."""
        rows = await self.store.client_info(hub.id, country_code, party_id)
        return [client_info_object(r) for r in rows]
