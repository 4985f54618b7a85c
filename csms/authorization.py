"""Who may charge: the id-tag store, plus any extra token sources (the OCPI bridge adds the
eMSPs' tokens), answered as an OCPP ``IdTagInfo``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .clock import Clock
from .store import Store
from .timeparse import from_db, to_ocpp

ID_TAG_STATUSES = ("Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx")


@dataclass(frozen=True, slots=True)
class IdTagInfo:
    status: str
    expiry_date: datetime | None = None
    parent_id_tag: str | None = None
    source: str = "local"  # which store answered: local, unknown, or a token source's name
    owner: str | None = None  # opaque reference to who owns the token, kept on transactions

    def to_ocpp(self) -> dict[str, Any]:
        info: dict[str, Any] = {"status": self.status}
        if self.expiry_date is not None:
            info["expiryDate"] = to_ocpp(self.expiry_date)
        if self.parent_id_tag:
            info["parentIdTag"] = self.parent_id_tag
        return info


class TokenSource(Protocol):
    name: str

    async def lookup(self, id_tag: str, station_id: str) -> IdTagInfo | None:
        """The tag's status from this source, or None when the source does not know it."""


class Authorizer:
    def __init__(self, store: Store, clock: Clock, accept_unknown: bool = False) -> None:
        self.store = store
        self.clock = clock
        self.accept_unknown = accept_unknown
        self.sources: list[TokenSource] = []

    def add_source(self, source: TokenSource) -> None:
        self.sources.append(source)

    async def authorize(self, id_tag: str, station_id: str) -> IdTagInfo:
        row = await self.store.id_tags.get(id_tag)
        if row is not None:
            expiry = from_db(row["expiry_date"])
            status = row["status"]
            if status == "Accepted" and expiry is not None and expiry <= self.clock.now():
                status = "Expired"
            return IdTagInfo(status, expiry, row["parent_id_tag"])
        for source in self.sources:
            info = await source.lookup(id_tag, station_id)
            if info is not None:
                return info
        return IdTagInfo("Accepted" if self.accept_unknown else "Invalid", source="unknown")
