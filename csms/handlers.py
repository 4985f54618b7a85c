"""What the central system does with each request a station sends.

Every handler stores what the request says, waits for the commit, emits the domain event and
returns the answer. Start, Stop and MeterValues are never refused for a business reason
(unknown transaction or tag, stop before start, meter going backwards): they are stored,
flagged and answered, because a charger resends a refused transaction message forever.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from .authorization import Authorizer
from .clock import Clock
from .config import Settings
from .events import (
    MeterSample,
    StationBooted,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
)
from .meter import Sample, energy_register_wh, normalise, power_w
from .metrics import Metrics
from .store import Store
from .timeparse import ParsedTime, parse_charger_time, to_ocpp
from .traffic import TrafficMonitor

if TYPE_CHECKING:
    from .connection import StationConnection

log = structlog.get_logger("csms.handlers")

Handler = Callable[["StationConnection", dict[str, Any], datetime], Awaitable[dict[str, Any]]]
DataTransferHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
CommandPreparer = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class Services:
    """What handlers, connections and commands share."""

    settings: Settings
    store: Store
    clock: Clock
    metrics: Metrics
    authorizer: Authorizer
    # vendorId -> handler(station_id, payload) -> DataTransfer.conf payload
    data_transfer_handlers: dict[str, DataTransferHandler] = field(default_factory=dict)
    # called after an accepted boot, once the answer is sent (configuration of R3/R4)
    on_boot_accepted: list[Callable[[StationConnection], None]] = field(default_factory=list)
    # measured intervals (R3/R4) and recent frames of each station, fed by its connection
    traffic: TrafficMonitor = field(default_factory=TrafficMonitor)
    # action -> prepare(station_id, payload) -> the payload to send: what an operator's
    # command goes through first (csms.security: PEM checks, GetLog's upload URL); raises
    # csms.commands.InvalidCommand for a bad one
    command_preparers: dict[str, CommandPreparer] = field(default_factory=dict)


def _parse_time(text: Any, received_at: datetime, what: str) -> ParsedTime:
    parsed = parse_charger_time(text, received_at)
    if parsed.corrected:
        log.info(
            "timestamp corrected",
            field=what,
            original=parsed.original,
            stored=to_ocpp(parsed.value),
            reason=parsed.correction,
        )
    return parsed


def _sample(sampled_value: dict[str, Any]) -> Sample:
    sample = normalise(sampled_value)
    if sample.value is not None and not math.isfinite(sample.value):
        # "Infinity", "NaN", "1e999": kept as sent (value_raw), no number (JSON has none)
        return dataclasses.replace(sample, value=None)
    return sample


def _meter_values(
    entries: list[dict[str, Any]], received_at: datetime, what: str
) -> list[tuple[ParsedTime, list[Sample]]]:
    return [
        (
            _parse_time(mv.get("timestamp"), received_at, what),
            [_sample(sv) for sv in mv.get("sampledValue", [])],
        )
        for mv in entries
    ]


def _repaired(conn: StationConnection, action: str) -> dict[str, Any] | None:
    """What the frame being handled held that cannot be stored as sent (integers beyond 64
    bits, clamped in the payload; lone surrogates, replaced), as flags and an anomaly."""
    call = getattr(conn, "frame", None)
    if call is None or not (call.out_of_range or call.invalid_unicode):
        return None
    flags = []
    if call.out_of_range:
        flags.append("out_of_range")
    if call.invalid_unicode:
        flags.append("invalid_unicode")
    return {
        "action": action,
        "flags": flags,
        "out_of_range": dict(call.out_of_range),
        "invalid_unicode": list(call.invalid_unicode),
    }


class OcppHandlers:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._routes: dict[str, Handler] = {
            "BootNotification": self.boot_notification,
            "Heartbeat": self.heartbeat,
            "StatusNotification": self.status_notification,
            "Authorize": self.authorize,
            "StartTransaction": self.start_transaction,
            "StopTransaction": self.stop_transaction,
            "MeterValues": self.meter_values,
            "DataTransfer": self.data_transfer,
            "DiagnosticsStatusNotification": self.diagnostics_status,
            "FirmwareStatusNotification": self.firmware_status,
        }

    def add_route(self, action: str, handler: Handler) -> None:
        """Handle ``action`` (one of ocppj.CP_ACTIONS) with ``handler`` (csms.security's)."""
        self._routes[action] = handler

    async def handle(
        self, conn: StationConnection, action: str, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        return await self._routes[action](conn, payload, received_at)

    # ------------------------------------------------------------------ station life

    async def boot_notification(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        s = self.services
        status, first = await s.store.stations.record_boot(
            conn.station_id,
            payload,
            received_at,
            events=lambda result: [
                StationBooted(
                    conn.station_id,
                    received_at,
                    result[0],
                    payload["chargePointVendor"],
                    payload["chargePointModel"],
                    payload.get("chargePointSerialNumber") or payload.get("chargeBoxSerialNumber"),
                    payload.get("firmwareVersion"),
                    result[1],
                )
            ],
        )
        log.info(
            "boot",
            status=status,
            vendor=payload["chargePointVendor"],
            model=payload["chargePointModel"],
            firmware=payload.get("firmwareVersion"),
            first_boot=first,
        )
        if status == "Accepted":
            conn.booted = True
            interval = s.settings.ocpp.heartbeat_interval
            for hook in s.on_boot_accepted:
                conn.after_answer(lambda hook=hook: hook(conn))
        else:
            interval = s.settings.ocpp.boot_retry_interval
        return {"status": status, "currentTime": to_ocpp(s.clock.now()), "interval": interval}

    async def heartbeat(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        return {"currentTime": to_ocpp(self.services.clock.now())}

    async def status_notification(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        s = self.services
        ts = _parse_time(payload.get("timestamp"), received_at, "StatusNotification.timestamp")
        changed = StatusChanged(
            conn.station_id,
            payload["connectorId"],
            payload["status"],
            payload["errorCode"],
            payload.get("info"),
            ts.value,
            received_at,
        )
        await s.store.status.record(
            conn.station_id, payload, ts, received_at, events=lambda _: [changed]
        )
        log.info(
            "status",
            connector_id=payload["connectorId"],
            status=payload["status"],
            error_code=payload["errorCode"],
        )
        return {}

    async def diagnostics_status(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        await self.services.store.stations.set_field(
            conn.station_id, "diagnostics_status", payload["status"]
        )
        log.info("diagnostics status", status=payload["status"])
        return {}

    async def firmware_status(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        await self.services.store.stations.set_field(
            conn.station_id, "firmware_status", payload["status"]
        )
        log.info("firmware status", status=payload["status"])
        return {}

    async def data_transfer(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        handler = self.services.data_transfer_handlers.get(payload["vendorId"])
        if handler is None:
            answer: dict[str, Any] = {"status": "UnknownVendorId"}
        else:
            answer = await handler(conn.station_id, payload)
        await self.services.store.data_transfers.record(
            conn.station_id, payload, answer["status"], received_at
        )
        log.info(
            "data transfer",
            vendor_id=payload["vendorId"],
            message_id=payload.get("messageId"),
            answer=answer["status"],
        )
        return answer

    # ------------------------------------------------------------------ charging

    async def authorize(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        info = await self.services.authorizer.authorize(payload["idTag"], conn.station_id)
        log.info("authorize", id_tag=payload["idTag"], status=info.status, source=info.source)
        return {"idTagInfo": info.to_ocpp()}

    async def start_transaction(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        s = self.services
        id_tag = payload["idTag"]
        info = await s.authorizer.authorize(id_tag, conn.station_id)
        start = _parse_time(payload["timestamp"], received_at, "StartTransaction.timestamp")
        flags = []
        if info.source == "unknown":
            flags.append("unknown_tag")
        if info.status != "Accepted":
            flags.append("not_accepted")
        repaired = _repaired(conn, "StartTransaction")
        if repaired is not None:
            flags.extend(repaired["flags"])
        result = await s.store.transactions.start(
            conn.station_id,
            payload["connectorId"],
            id_tag,
            info.status,
            payload["meterStart"],
            start,
            payload.get("reservationId"),
            flags,
            received_at,
            tag_owner=info.owner,
            repaired=repaired,
            events=lambda r: (
                [
                    TransactionStarted(
                        r.transaction_id,
                        conn.station_id,
                        payload["connectorId"],
                        id_tag,
                        info.status,
                        payload["meterStart"],
                        start.value,
                        received_at,
                        info.owner,
                    )
                ]
                if r.created
                else []
            ),
        )
        log.info(
            "transaction started" if result.created else "transaction start replayed",
            transaction_id=result.transaction_id,
            connector_id=payload["connectorId"],
            id_tag=id_tag,
            id_tag_status=info.status,
            flags=flags,
        )
        return {"transactionId": result.transaction_id, "idTagInfo": info.to_ocpp()}

    async def stop_transaction(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        s = self.services
        stop = _parse_time(payload["timestamp"], received_at, "StopTransaction.timestamp")
        samples = _meter_values(
            payload.get("transactionData") or [], received_at, "StopTransaction.transactionData"
        )
        result = await s.store.transactions.stop(
            conn.station_id,
            payload["transactionId"],
            payload["meterStop"],
            stop,
            payload.get("reason"),
            payload.get("idTag"),
            samples,
            payload,
            received_at,
            repaired=_repaired(conn, "StopTransaction"),
            events=lambda r: (
                [
                    TransactionStopped(
                        r.transaction_id,
                        conn.station_id,
                        r.connector_id,
                        payload["meterStop"],
                        stop.value,
                        payload.get("reason"),
                        received_at,
                    )
                ]
                if r.outcome == "stopped"
                and r.transaction_id is not None
                and r.connector_id is not None
                else []
            ),
        )
        log_fn = log.info if result.outcome == "stopped" else log.warning
        log_fn(
            {
                "stopped": "transaction stopped",
                "replayed": "transaction stop replayed",
                "unknown_transaction": "stop for an unknown transaction stored as an anomaly",
            }[result.outcome],
            transaction_id=payload["transactionId"],
            reason=payload.get("reason"),
            meter_stop=payload["meterStop"],
            flags=list(result.flags),
        )
        answer: dict[str, Any] = {}
        if "idTag" in payload:
            info = await s.authorizer.authorize(payload["idTag"], conn.station_id)
            answer["idTagInfo"] = info.to_ocpp()
        return answer

    async def meter_values(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        s = self.services
        connector_id = payload["connectorId"]
        reported = payload.get("transactionId")
        samples = _meter_values(payload["meterValue"], received_at, "MeterValues.timestamp")
        result = await s.store.transactions.add_meter_values(
            conn.station_id,
            connector_id,
            reported,
            samples,
            received_at,
            repaired=_repaired(conn, "MeterValues"),
            events=lambda r: [
                MeterSample(
                    conn.station_id,
                    connector_id,
                    r.transaction_id,
                    ts.value,
                    energy_register_wh(values),
                    power_w(values),
                    tuple(values),
                    received_at,
                )
                for ts, values in samples
            ],
        )
        if result.unknown_transaction:
            log.warning(
                "meter values for an unknown transaction stored and flagged",
                transaction_id=reported,
            )
        return {}
