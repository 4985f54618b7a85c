"""eMSPs' tokens (pushed to our tokens Receiver) as a source of authorization for csms.

A token is accepted when it is `valid` and whitelisted (`ALWAYS` or `ALLOWED`): MOBI.E does
no real-time authorization, so `ALLOWED_OFFLINE` and `NEVER` tokens, which would need it,
are refused. The OCPP idTag is the token's `uid`. The transaction it starts records the
token's owner (``CC/PID``), which decides who may see the session and its CDR.

A uid is held by one party only (the tokens Receiver refuses a uid another party holds). A
uid that several parties hold anyway (a database from before that rule) is ambiguous: it
is refused (``Invalid``) and logged, never given to one of them, whose card it may not be.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from csms.ports import IdTagInfo, LocalListEntry

from .store import OcpiStore

log = structlog.get_logger("ocpi.tokens")

WHITELISTED = ("ALWAYS", "ALLOWED")
# on the stations' local lists (csms.local_lists), used when a station cannot reach csms:
# ALLOWED_OFFLINE too (whitelisting "only allowed when the CPO cannot reach the eMSP", which
# is exactly a station offline), NEVER never; the preferred first when room is short
OFFLINE_WHITELISTED = ("ALWAYS", "ALLOWED", "ALLOWED_OFFLINE")
# cards a station's reader presents (an APP_USER or AD_HOC_USER uid is never read there)
OFFLINE_TYPES = ("RFID", "OTHER")


def owner_of(token: dict[str, object]) -> str:
    return f"{str(token['country_code']).upper()}/{str(token['party_id']).upper()}"


def offline_entry(token: dict[str, Any]) -> LocalListEntry | None:
    """A token's entry on the stations' local lists, or None when it may not charge
    offline (not valid, whitelist NEVER, not a card, a uid longer than OCPP's 20)."""
    uid = token.get("uid")
    if not (isinstance(uid, str) and 0 < len(uid) <= 20):
        return None
    if not token.get("valid") or token.get("whitelist") not in OFFLINE_WHITELISTED:
        return None
    if token.get("type") not in OFFLINE_TYPES:
        return None
    group = token.get("group_id")
    parent = group if isinstance(group, str) and 0 < len(group) <= 20 else None
    return LocalListEntry(uid, "Accepted", None, parent)


class OcpiTokenSource:
    name = "ocpi"

    def __init__(self, store: OcpiStore) -> None:
        self.store = store
        # (station id, id tag) -> a remote start's grant, set by the commands service
        self.grants: Callable[[str, str], Any] = lambda station_id, id_tag: None

    async def offline_entries(self, limit: int) -> list[LocalListEntry]:
        """csms's offline list source (``CsmsPort.add_offline_list_source``)."""
        tokens = await self.store.offline_tokens(OFFLINE_WHITELISTED, OFFLINE_TYPES, limit)
        return [e for t in tokens if (e := offline_entry(t)) is not None][:limit]

    async def lookup(self, id_tag: str, station_id: str) -> IdTagInfo | None:
        grant = self.grants(station_id, id_tag)
        if grant is not None:
            # the token of an OCPI START_SESSION is accepted at that station, never
            # re-authorized (the eMSP already did; APP_USER tokens may be whitelist NEVER)
            return IdTagInfo("Accepted", source=self.name, owner=grant.owner)
        tokens = await self.store.tokens_by_uid(id_tag)
        if not tokens:
            return None
        owners = sorted({owner_of(t) for t in tokens})
        if len(owners) > 1:
            # whose card is it? Sessions and CDRs would go to whichever we chose: nobody's
            log.warning("token uid held by several parties: refused", uid=id_tag, owners=owners)
            return IdTagInfo("Invalid", source=self.name)
        usable = [t for t in tokens if t["valid"] and t["whitelist"] in WHITELISTED]
        token = usable[0] if usable else tokens[0]
        if not token["valid"]:
            status = "Blocked"
        elif token["whitelist"] not in WHITELISTED:
            status = "Invalid"
            log.info(
                "token needs real-time authorization, which MOBI.E does not use: refused",
                uid=id_tag,
                whitelist=token["whitelist"],
            )
        else:
            status = "Accepted"
        group = token.get("group_id")
        parent = str(group) if isinstance(group, str) and len(group) <= 20 else None
        return IdTagInfo(status, parent_id_tag=parent, source=self.name, owner=owner_of(token))
