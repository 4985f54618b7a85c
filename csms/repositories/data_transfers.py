"""Data transfers: the vendor-specific DataTransfer requests stations sent, and our answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..db import Database, Tx
from ..timeparse import to_db


class DataTransferRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(
        self, station_id: str, payload: dict[str, Any], answer: str, at: datetime
    ) -> None:
        async def job(db: Tx) -> None:
            await db.execute(
                "INSERT INTO data_transfers (station_id, vendor_id, message_id, data, answer, "
                "received_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    station_id,
                    payload["vendorId"],
                    payload.get("messageId"),
                    payload.get("data"),
                    answer,
                    to_db(at),
                ),
            )

        await self.db.write(job)
