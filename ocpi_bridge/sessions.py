"""OCPI Sessions and CDRs, from csms's transactions and meter values.

- A Session is a transaction: id = the transaction id, ACTIVE while it runs, COMPLETED when
  it stopped with an accepted tag (INVALID otherwise), `kwh` and `charging_periods` (ENERGY
  and POWER) from the meter values, `last_updated` = when the transaction last changed.
- A CDR is made once per finished transaction and never changed: totals, charging periods
  (ENERGY, TIME/PARKING_TIME, MAX/MIN_POWER), CdrToken, CdrLocation (with MOBI.E's
  `mobie_voltage_level`), the connector's tariffs that concern the transaction and the cost
  the first of them gives (``prices.applicable_tariffs``: an ad hoc transaction is priced
  with the connector's AD_HOC_PAYMENT tariff, any other with its first other tariff).
- An ad hoc transaction (``prices.is_ad_hoc`` of its token owner) carries our own CdrToken,
  of type AD_HOC_USER, with the id tag as uid and contract_id.
- A card accepted by real-time authorization (``POST tokens/{uid}/authorize``, kept in
  ``ocpi_authorizations`` by ocpi_bridge.tokens) gives its transaction's Session and CDR
  ``auth_method`` AUTH_REQUEST, the ``authorization_reference`` the eMSP answered and, when
  no pushed token of that owner has the uid, the CdrToken the eMSP answered (its party,
  type and contract_id). A session started by a command is COMMAND; any other WHITELIST.
- Who sees what: a hub (MOBI.E) sees every session and CDR; an eMSP only those started with
  its own tokens (never an ad hoc one: its owner is no eMSP's party).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import structlog

from csms.ports import (
    CsmsPort,
    StationSnapshot,
    TransactionView,
    from_db,
    to_db,
)

from .charging import MeterPoint, closed_periods, session_kwh, session_points, totals
from .config import OcpiSettings
from .prices import (
    AD_HOC_TOKEN_TYPE,
    applicable_tariffs,
    connector_place,
    connector_tariff_rows,
    is_ad_hoc,
    meter_points,
    session_inputs,
    transaction_points,
)
from .pricing import TariffDef, price_session
from .store import OcpiStore
from .transport import ocpi_time

log = structlog.get_logger("ocpi.sessions")

# finished transactions looked at per read when making the CDRs missing
MISSING_CDR_PAGE = 500
# a real-time authorization is the one of a transaction when made at most AUTH_BEFORE before
# csms received its StartTransaction, or AUTH_AFTER after (the StartTransaction's own
# lookup, which asks the eMSP when nothing is cached, finishes after its receipt)
AUTH_BEFORE = timedelta(minutes=10)
AUTH_AFTER = timedelta(seconds=60)


def _filters(
    time_column: str,
    owner_column: str,
    date_from: datetime | None,
    date_to: datetime | None,
    owners: set[str] | None,
) -> tuple[str, list[Any]]:
    """SQL conditions for a paginated GET: date_from inclusive, date_to exclusive, and the
    token owners the caller may see (None: all)."""
    where, params = "", []
    if date_from is not None:
        where += f" AND {time_column} >= ?"
        params.append(to_db(date_from))
    if date_to is not None:
        where += f" AND {time_column} < ?"
        params.append(to_db(date_to))
    if owners is not None:
        if not owners:
            return where + " AND 1 = 0", params
        where += f" AND {owner_column} IN ({','.join('?' * len(owners))})"
        params += sorted(owners)
    return where, params


def for_peer(obj: dict[str, Any], version: str, mobie: bool = False) -> dict[str, Any]:
    """A Session or CDR as one peer gets it: OCPI 2.2 has no country_code/party_id in
    CdrToken; and towards MOBI.E in MOBI.E mode (``mobie``), ``auth_method`` is WHITELIST as
    its profile fixes it (seed 001, Sessions and CDRs tables), also for a session started by
    a command, which keeps its ``authorization_reference``. MOBI.E's extensions
    (``mobie_*``) go to MOBI.E only."""
    out = obj
    if version == "2.2":
        out = dict(obj)
        token = dict(out["cdr_token"])
        token.pop("country_code", None)
        token.pop("party_id", None)
        out["cdr_token"] = token
    if mobie and out.get("auth_method") != "WHITELIST":
        out = {**out, "auth_method": "WHITELIST"}
    location = out.get("cdr_location")
    if not mobie and isinstance(location, dict) and "mobie_voltage_level" in location:
        # MOBI.E's extension is for MOBI.E: every other peer gets plain OCPI
        plain = {k: v for k, v in location.items() if not k.startswith("mobie_")}
        out = {**out, "cdr_location": plain}
    return out


def realtime_authorization(
    tx: TransactionView, records: Iterable[dict[str, Any]]
) -> dict[str, Any] | None:
    """The real-time authorization that let ``tx`` start (a row of ``ocpi_authorizations``),
    or None: the newest of the same station, id tag (any case) and owner, made between
    AUTH_BEFORE before and AUTH_AFTER after csms received the StartTransaction."""
    if not tx.tag_owner or is_ad_hoc(tx.tag_owner):
        return None
    since = tx.start_received_at - AUTH_BEFORE
    until = tx.start_received_at + AUTH_AFTER
    best: tuple[datetime, dict[str, Any]] | None = None
    for r in records:
        if (
            r["station_id"] != tx.station_id
            or str(r["id_tag"]).upper() != tx.id_tag.upper()
            or r["owner"] != tx.tag_owner
        ):
            continue
        at = from_db(r["authorized_at"])
        if at is None or not since <= at <= until:
            continue
        if best is None or at > best[0]:
            best = (at, r)
    return best[1] if best is not None else None


class SessionBuilder:
    def __init__(self, settings: OcpiSettings, csms: CsmsPort, ocpi: OcpiStore) -> None:
        self.settings = settings
        self.csms = csms
        self.store = csms.db  # the bridge's own tables
        self.ocpi = ocpi

    # ------------------------------------------------------------------ inputs

    async def _stations(self, station_ids: set[str]) -> dict[str, StationSnapshot]:
        return await self.csms.stations(station_ids)

    async def _realtime(self, txs: list[TransactionView]) -> dict[int, dict[str, Any]]:
        """Transactions whose card was accepted by real-time authorization -> that record
        (:func:`realtime_authorization`); one read for all of them."""
        txs = [t for t in txs if t.tag_owner and not is_ad_hoc(t.tag_owner)]
        if not txs:
            return {}
        rows = await self.ocpi.authorizations(
            {t.station_id for t in txs},
            {t.id_tag for t in txs},
            min(t.start_received_at for t in txs) - AUTH_BEFORE,
            max(t.start_received_at for t in txs) + AUTH_AFTER,
        )
        if not rows:
            return {}
        by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in rows:
            by_key.setdefault((r["station_id"], str(r["id_tag"]).upper()), []).append(r)
        out = {}
        for tx in txs:
            found = realtime_authorization(tx, by_key.get((tx.station_id, tx.id_tag.upper()), []))
            if found is not None:
                out[tx.id] = found
        return out

    async def _cdr_token(
        self, tx: TransactionView, realtime: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The CdrToken: ours for an ad hoc transaction; else the owner's pushed token of
        that uid; else the token the eMSP answered in real time (``realtime``); else our
        party with the id tag as uid and contract_id."""
        owner = tx.tag_owner
        s = self.settings
        if is_ad_hoc(owner):  # paid on the spot: our own token, of MOBI.E's ad hoc type
            return {
                "country_code": s.country_code,
                "party_id": s.party_id,
                "uid": tx.id_tag,
                "type": AD_HOC_TOKEN_TYPE,
                "contract_id": tx.id_tag,
            }
        if owner:
            cc, _, pid = owner.partition("/")
            for token in await self.ocpi.tokens_by_uid(tx.id_tag):
                if token["country_code"].upper() == cc and token["party_id"].upper() == pid:
                    return {
                        "country_code": cc,
                        "party_id": pid,
                        "uid": token["uid"],
                        "type": token["type"],
                        "contract_id": token["contract_id"],
                    }
        if realtime is not None:
            return {
                k: realtime[k] for k in ("country_code", "party_id", "uid", "type", "contract_id")
            }
        return {
            "country_code": s.country_code,
            "party_id": s.party_id,
            "uid": tx.id_tag,
            "type": "RFID",
            "contract_id": tx.id_tag,
        }

    # ------------------------------------------------------------------ sessions

    def _session(
        self,
        tx: TransactionView,
        station: StationSnapshot | None,
        points: list[MeterPoint],
        cdr_token: dict[str, Any],
    ) -> dict[str, Any] | None:
        place = connector_place(station, tx.connector_id)
        if place is None:
            return None
        location, evse, connector = place
        inputs = session_inputs(tx, points)
        cleaned = session_points(**inputs)
        stopped = tx.stop_received_at is not None
        status = "ACTIVE"
        if stopped:
            status = "COMPLETED" if tx.id_tag_status == "Accepted" else "INVALID"
        session: dict[str, Any] = {
            "country_code": self.settings.country_code,
            "party_id": self.settings.party_id,
            "id": str(tx.id),
            "start_date_time": ocpi_time(tx.start_time),  # type: ignore[arg-type]
            "kwh": session_kwh(**inputs),
            "cdr_token": cdr_token,
            "auth_method": "WHITELIST",
            "location_id": location["id"],
            "evse_uid": evse["uid"],
            "connector_id": connector["id"],
            "currency": self.settings.currency,
            "charging_periods": closed_periods(cleaned, "session"),
            "status": status,
            "last_updated": ocpi_time(tx.updated_at),  # type: ignore[arg-type]
        }
        if stopped:
            session["end_date_time"] = ocpi_time(tx.stop_time)  # type: ignore[arg-type]
        meter_id = (station.boot_info if station is not None else {}).get("meterSerialNumber")
        if meter_id:
            session["meter_id"] = str(meter_id)[:255]
        return session

    async def _commanded(self, txs: list[TransactionView]) -> dict[int, str | None]:
        """Transactions started by an OCPI START_SESSION -> its authorization_reference.

        Matched as the commands service does (same station, connector and token, started
        while the command waited), so a Session pushed before the command's result was
        decided already carries it."""
        out: dict[int, str | None] = {}
        for tx in txs:
            if not tx.tag_owner or is_ad_hoc(tx.tag_owner):
                continue  # only eMSPs' tokens start sessions by command
            row = await self.store.read_one(
                """SELECT authorization_reference FROM ocpi_commands
                   WHERE command = 'START_SESSION' AND (transaction_id = ? OR (
                       transaction_id IS NULL AND station_id = ? AND connector_id = ?
                       AND id_tag = ? COLLATE NOCASE AND deadline IS NOT NULL
                       AND created_at <= ? AND deadline >= ?))
                   ORDER BY created_at DESC LIMIT 1""",
                (
                    tx.id,
                    tx.station_id,
                    tx.connector_id,
                    tx.id_tag,
                    to_db(tx.start_received_at),
                    to_db(tx.start_received_at),
                ),
            )
            if row is not None:
                out[tx.id] = row["authorization_reference"]
        return out

    @staticmethod
    def _authorization(
        obj: dict[str, Any],
        tx_id: int,
        commanded: dict[int, str | None],
        realtime: dict[int, dict[str, Any]] | None = None,
    ) -> None:
        """``auth_method`` and ``authorization_reference``: COMMAND (started by an OCPI
        START_SESSION), AUTH_REQUEST (accepted by real-time authorization), else as built
        (WHITELIST)."""
        if tx_id in commanded:
            obj["auth_method"] = "COMMAND"
            if commanded[tx_id]:
                obj["authorization_reference"] = commanded[tx_id]
            return
        record = (realtime or {}).get(tx_id)
        if record is not None:
            obj["auth_method"] = "AUTH_REQUEST"
            if record["authorization_reference"]:
                obj["authorization_reference"] = record["authorization_reference"]

    async def sessions_for(self, txs: list[TransactionView]) -> list[dict[str, Any]]:
        stations = await self._stations({t.station_id for t in txs})
        points = await meter_points(self.csms, [t.id for t in txs])
        commanded = await self._commanded(txs)
        realtime = await self._realtime(txs)
        out = []
        for tx in txs:
            token = await self._cdr_token(tx, realtime.get(tx.id))
            s = self._session(tx, stations.get(tx.station_id), points.get(tx.id, []), token)
            if s is not None:
                self._authorization(s, tx.id, commanded, realtime)
                out.append(s)
        return out

    async def session(self, transaction_id: int) -> dict[str, Any] | None:
        tx = await self.csms.transaction(transaction_id)
        if tx is None:
            return None
        found = await self.sessions_for([tx])
        return found[0] if found else None

    async def list_sessions(
        self,
        owners: set[str] | None,
        date_from: datetime | None,
        date_to: datetime | None,
        offset: int,
        limit: int,
        version: str,
        mobie: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:
        rows, total = await self.csms.transactions(
            owners=owners, updated_from=date_from, updated_to=date_to, offset=offset, limit=limit
        )
        items = [for_peer(s, version, mobie) for s in await self.sessions_for(rows)]
        return items, total

    # ------------------------------------------------------------------ CDRs

    async def make_cdr(self, transaction_id: int, now: datetime) -> dict[str, Any] | None:
        """Make and store the CDR of a finished transaction (once); None when it cannot be
        made (transaction still running, or its station has no definition)."""
        tx = await self.csms.transaction(transaction_id)
        if tx is None or tx.stop_received_at is None:
            return None
        stations = await self._stations({tx.station_id})
        station = stations.get(tx.station_id)
        place = connector_place(station, tx.connector_id)
        if place is None:
            log.warning("no CDR: the station has no definition", transaction_id=transaction_id)
            return None
        location, evse, connector = place
        points = (await meter_points(self.csms, [transaction_id])).get(transaction_id, [])
        cleaned = transaction_points(tx, points)  # as Pricing.bill prices it
        start, end = tx.start_time, tx.stop_time
        assert start is not None and end is not None
        end = max(end, start)
        t = totals(cleaned)
        # a CDR needs a period; a session that started and stopped in the same second has none
        periods = closed_periods(cleaned, "cdr") or [
            {
                "start_date_time": ocpi_time(start),
                "dimensions": [{"type": "ENERGY", "volume": t.total_energy}],
            }
        ]
        # the connector's tariffs that concern this transaction (ad hoc or not); the first
        # prices it (prices.applicable_tariffs, which Pricing.bill uses too)
        tariff_rows = applicable_tariffs(
            await connector_tariff_rows(self.ocpi, connector), is_ad_hoc(tx.tag_owner)
        )
        s = self.settings
        realtime = await self._realtime([tx])
        tariffs = [
            TariffDef.model_validate(r["body"]).to_ocpi(
                s.country_code, s.party_id, r["last_updated"]
            )
            for r in tariff_rows
        ]
        costs: dict[str, Any] = {
            "total_cost": {"excl_vat": 0.0},
            "total_fixed_cost": {"excl_vat": 0.0},
            "total_energy_cost": {"excl_vat": 0.0},
            "total_time_cost": {"excl_vat": 0.0},
            "total_parking_cost": {"excl_vat": 0.0},
        }
        if tariff_rows:
            priced = price_session(
                TariffDef.model_validate(tariff_rows[0]["body"]), cleaned, location["time_zone"]
            )
            costs.update(priced.cdr_fields())
        else:
            log.warning("CDR without tariff: costs are zero", transaction_id=transaction_id)
        cdr_location = {
            "id": location["id"],
            "name": location.get("name"),
            "address": location["address"],
            "city": location["city"],
            "postal_code": location.get("postal_code"),
            "state": location.get("state"),
            "country": location["country"],
            "coordinates": location["coordinates"],
            "evse_uid": evse["uid"],
            "evse_id": evse.get("evse_id") or evse["uid"],
            "connector_id": connector["id"],
            "connector_standard": connector["standard"],
            "connector_format": connector["format"],
            "connector_power_type": connector["power_type"],
            "mobie_voltage_level": location.get("mobie_voltage_level"),
        }
        cdr: dict[str, Any] = {
            "country_code": s.country_code,
            "party_id": s.party_id,
            "id": str(transaction_id),
            "start_date_time": ocpi_time(start),
            "end_date_time": ocpi_time(end),
            "session_id": str(transaction_id),
            "cdr_token": await self._cdr_token(tx, realtime.get(transaction_id)),
            "auth_method": "WHITELIST",
            "cdr_location": {k: v for k, v in cdr_location.items() if v is not None},
            "currency": s.currency,
            "tariffs": tariffs,
            "charging_periods": periods,
            **costs,
            "total_energy": t.total_energy,
            "total_time": t.total_time,
            "total_parking_time": t.total_parking_time,
            "last_updated": ocpi_time(now),
        }
        meter_id = (station.boot_info if station is not None else {}).get("meterSerialNumber")
        if meter_id:
            cdr["meter_id"] = str(meter_id)[:255]
        self._authorization(cdr, transaction_id, await self._commanded([tx]), realtime)
        if not tariffs:
            del cdr["tariffs"]
        created = await self.ocpi.insert_cdr(cdr["id"], transaction_id, tx.tag_owner, cdr, now)
        if created:
            log.info("CDR made", transaction_id=transaction_id, kwh=t.total_energy)
        return cdr if created else await self._stored_cdr(transaction_id)

    async def _stored_cdr(self, transaction_id: int) -> dict[str, Any] | None:
        row = await self.store.read_one(
            "SELECT body FROM ocpi_cdrs WHERE transaction_id = ?", (transaction_id,)
        )
        return json.loads(row["body"]) if row else None

    async def make_missing_cdrs(self, now: datetime) -> int:
        made, after = 0, 0
        while ids := await self.csms.stopped_transaction_ids(after, MISSING_CDR_PAGE):
            after = ids[-1]
            have = await self.ocpi.transactions_with_cdr(ids)
            for tx_id in ids:
                if tx_id not in have and await self.make_cdr(tx_id, now) is not None:
                    made += 1
        return made

    async def list_cdrs(
        self,
        owners: set[str] | None,
        date_from: datetime | None,
        date_to: datetime | None,
        offset: int,
        limit: int,
        version: str,
        mobie: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:
        await self.make_missing_cdrs(self.csms.clock.now())
        clause, params = _filters("created_at", "owner", date_from, date_to, owners)
        where = "WHERE 1 = 1" + clause
        total = await self.store.read_one(f"SELECT COUNT(*) AS n FROM ocpi_cdrs {where}", params)
        rows = await self.store.read(
            f"SELECT body FROM ocpi_cdrs {where} ORDER BY created_at, transaction_id "
            "LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        items = [for_peer(json.loads(r["body"]), version, mobie) for r in rows]
        return items, int(total["n"]) if total else 0

    async def get_cdr(
        self, owners: set[str] | None, cdr_id: str, version: str, mobie: bool = False
    ) -> dict[str, Any] | None:
        clause, params = _filters("created_at", "owner", None, None, owners)
        row = await self.store.read_one(
            f"SELECT body FROM ocpi_cdrs WHERE id = ?{clause}", [cdr_id, *params]
        )
        return for_peer(json.loads(row["body"]), version, mobie) if row else None
