"""eMSPs' tokens (pushed to our tokens Receiver) as a source of authorization for csms.

A token is accepted when it is `valid` and whitelisted (`ALWAYS` or `ALLOWED`), when its
peer does no real-time authorization (MOBI.E's profile: `ALLOWED_OFFLINE` and `NEVER` tokens,
which would need it, are refused). When its peer does (its policy's ``realtime_auth``), a
token whitelisted `ALLOWED`, `ALLOWED_OFFLINE` or `NEVER` is asked of it, and a card no
token matches is asked of every such peer (ocpi_bridge.realtime_auth). The OCPP idTag is
the token's `uid`. The transaction it starts records the
token's owner (``CC/PID``), which decides who may see the session and its CDR. A card a
peer's answer accepted is kept in ``ocpi_authorizations`` (the token the eMSP answered, its
authorization_reference), so that the Session and CDR of the charge it starts carry them
(ocpi_bridge.sessions; built in the delivery process, the database is the shared place).

A uid is held by one party only (the tokens Receiver refuses a uid another party holds). A
uid that several parties hold anyway (a database from before that rule) is ambiguous: it
is refused (``Invalid``) and logged, never given to one of them, whose card it may not be.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from csms.ports import IdTagInfo, LocalListEntry

from .realtime_auth import (
    RealtimeAuth,
    Verdict,
    askable,
    authorization_record,
    decide,
    needs_asking,
    owner_of,
    whitelist_only,
)
from .store import OcpiStore

log = structlog.get_logger("ocpi.tokens")

WHITELISTED = ("ALWAYS", "ALLOWED")
# on the stations' local lists (csms.local_lists), used when a station cannot reach csms:
# ALLOWED_OFFLINE too (whitelisting "only allowed when the CPO cannot reach the eMSP", which
# is exactly a station offline), NEVER never; the preferred first when room is short
OFFLINE_WHITELISTED = ("ALWAYS", "ALLOWED", "ALLOWED_OFFLINE")
# cards a station's reader presents (an APP_USER or AD_HOC_USER uid is never read there)
OFFLINE_TYPES = ("RFID", "OTHER")
# cards accepted in real time, kept for their Sessions and CDRs (ocpi_authorizations): at
# most one row per (station, id tag) per RECORD_GAP, none older than RECORDS_KEPT, pruned
# at most once per PRUNE_EVERY
RECORD_GAP = timedelta(seconds=10)
RECORDS_KEPT = timedelta(days=7)
PRUNE_EVERY = timedelta(hours=1)
RECENT_RECORDS = 10_000  # what this process remembers writing (to skip a write)


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

    def __init__(self, store: OcpiStore, realtime: RealtimeAuth | None = None) -> None:
        self.store = store
        # real-time authorization (issue 19): None = whitelist only
        self.realtime = realtime
        # (station id, id tag) -> a remote start's grant, set by the commands service
        self.grants: Callable[[str, str], Any] = lambda station_id, id_tag: None
        # (station id, id tag) -> when and what this process last kept (see _remember)
        self._recent: OrderedDict[tuple[str, str], tuple[datetime, dict[str, Any]]] = OrderedDict()
        self._pruned_at: datetime | None = None

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
        rows = await self._tokens(id_tag)
        if not rows:
            return await self._unknown_card(id_tag, station_id)
        tokens = [t for t, _ in rows]
        owners = sorted({owner_of(t) for t in tokens})
        if len(owners) > 1:
            # whose card is it? Sessions and CDRs would go to whichever we chose: nobody's
            log.warning("token uid held by several parties: refused", uid=id_tag, owners=owners)
            return IdTagInfo("Invalid", source=self.name)
        usable = [(t, p) for t, p in rows if t["valid"] and t["whitelist"] in WHITELISTED]
        token, peer_id = usable[0] if usable else rows[0]
        peer = None
        if self.realtime is not None and needs_asking(token):
            peer = self.realtime.peer(peer_id, owner_of(token))
            if peer is not None and not askable(peer):
                peer = None
        if peer is None:
            verdict = whitelist_only(token)
            if verdict.status == "Invalid":
                log.info(
                    "token needs real-time authorization, which its peer does not do: refused",
                    uid=id_tag,
                    whitelist=token["whitelist"],
                )
        else:
            assert self.realtime is not None
            answers, location_id = await self.realtime.ask(
                [peer], id_tag, station_id, party=owner_of(token)
            )
            decided = decide(token, answers, location_id)
            assert decided is not None  # (a token always has a verdict)
            verdict = decided
            log.info(
                "token authorized in real time",
                uid=id_tag,
                whitelist=token["whitelist"],
                peer=peer.name,
                status=verdict.status,
                reason=verdict.reason,
            )
            await self._remember(verdict, id_tag, station_id, token)
        return self._info(verdict)

    async def _unknown_card(self, id_tag: str, station_id: str) -> IdTagInfo | None:
        """A card no pushed token matches: asked of the eMSPs that do real-time
        authorization; None (csms's own rule) when none allows or refuses it."""
        if self.realtime is None:
            return None
        peers = self.realtime.peers()
        if not peers:
            return None
        answers, location_id = await self.realtime.ask(peers, id_tag, station_id)
        verdict = decide(None, answers, location_id)
        if verdict is None:
            log.info("card unknown to every eMSP asked", uid=id_tag, asked=len(peers))
            return None
        log.info(
            "card authorized in real time",
            uid=id_tag,
            status=verdict.status,
            peer_id=verdict.peer_id,
            owner=verdict.owner,
        )
        await self._remember(verdict, id_tag, station_id, None)
        return self._info(verdict)

    async def _remember(
        self,
        verdict: Verdict,
        id_tag: str,
        station_id: str,
        pushed: dict[str, Any] | None,
    ) -> None:
        """Keep a card a peer's answer accepted, for the Session and CDR of the charge it
        starts (built in the delivery process: the database is the shared place). A failure
        to keep it is logged, never the card refused."""
        record = authorization_record(verdict, id_tag, "RFID", pushed)
        if record is None:
            return
        now = self.store.clock.now()
        key = (station_id, record["id_tag"])
        last = self._recent.get(key)
        if last is not None and last[1] == record and now - last[0] < RECORD_GAP:
            return  # (Authorize then StartTransaction: one row is enough)
        try:
            await self.store.record_authorization(station_id, record, RECORD_GAP)
            if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
                self._pruned_at = now
                await self.store.prune_authorizations(now - RECORDS_KEPT)
        except Exception:
            log.exception("real-time authorization not kept", uid=id_tag, station_id=station_id)
            return
        self._recent.pop(key, None)
        self._recent[key] = (now, record)
        while len(self._recent) > RECENT_RECORDS:
            self._recent.popitem(last=False)

    def _info(self, verdict: Verdict) -> IdTagInfo:
        return IdTagInfo(
            verdict.status,
            parent_id_tag=verdict.parent_id_tag,
            source=self.name,
            owner=verdict.owner,
        )

    async def _tokens(self, uid: str) -> list[tuple[dict[str, Any], int | None]]:
        """The pushed tokens with this uid (any case), newest first, with the peer that
        pushed each (None for a token from before that was kept)."""
        rows = await self.store.store.read(
            "SELECT body, peer_id FROM ocpi_tokens WHERE uid = ? ORDER BY last_updated DESC",
            (uid,),
        )
        return [(json.loads(r["body"]), r["peer_id"]) for r in rows]
