"""One websocket connection of a simulated station: an ``ocpp.v16.ChargePoint``.

The ``@on`` handlers below decide the answer to each central-system call and return the
``call_result`` dataclass, possibly wrapped in an :class:`Outcome` that also names the
follow-up work (StartTransaction after RemoteStartTransaction, ...) and whether the answer is
actually sent. The frame routing is our own (see :meth:`Link.route_message`) so that no frame
can stop the receive loop, a handler can decline to answer, follow-up tasks are tracked by
the station, 1.6's ``FormationViolation`` spelling is used, and answers are matched to calls
by unique id.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from ocpp.charge_point import (
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, CallResult, validate_payload
from ocpp.routing import on
from ocpp.v16 import ChargePoint
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from charger_sim.errors import (
    IGNORE,
    CallErrorReceived,
    CallErrorReply,
    ConnectionLostError,
    InvalidResponseError,
)
from charger_sim.timeutil import iso

if TYPE_CHECKING:
    from charger_sim.station import Station

log = structlog.get_logger("charger_sim")

OCPP_VERSION = "1.6"
_V16_ACTIONS = frozenset(action.value for action in Action)


@dataclass
class Outcome:
    """What an ``@on`` handler decided: the answer, whether to send it, and follow-up work
    started (as a task tracked by the station) after the answer went out."""

    answer: Any
    followup: Callable[[], Coroutine[Any, Any, Any]] | None = None
    send: bool = True


def _ocpp16_code(code: str) -> str:
    # The library names the 1.6 error "FormatViolation"; OCPP-J 1.6 spells it FormationViolation.
    return "FormationViolation" if code == "FormatViolation" else code


async def _check(message: Call | CallResult) -> None:
    """Validate against the library's 1.6 schema; a violation raises the library's OCPPError.

    A validator that cannot run is skipped with a warning: the library caches one validator
    per schema whatever float parser built it, so other code in the process that loaded e.g.
    GetCompositeScheduleResponse with floats makes the library's Decimal check raise
    TypeError.
    """
    try:
        await validate_payload(message, OCPP_VERSION)
    except OCPPError:
        raise
    except Exception as exc:
        log.warning("schema check skipped", action=message.action, error=repr(exc))


def _plain_details(details: Any) -> dict[str, Any]:
    if isinstance(details, dict):
        return {"cause": str(details.get("cause", ""))} if details else {}
    return {}


class Link(ChargePoint):
    """The ``ocpp.v16.ChargePoint`` for one connection of ``station``."""

    def __init__(self, station: Station, ws: ClientConnection) -> None:
        super().__init__(station.id, ws, response_timeout=station.response_timeout)
        self.station = station
        self.ws = ws
        self.closed = False
        self.intentional = False
        self.rx_task: asyncio.Task[None] | None = None
        self.heartbeat_task: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[Any]] = {}

    # ------------------------------------------------------------------ outgoing

    async def request(
        self, action: str, payload: dict[str, Any], *, validate: bool, timeout: float
    ) -> dict[str, Any]:
        """Send a CALL and return the CALLRESULT payload (see the station's conventions)."""
        stats = self.station.stats
        unique_id = str(self._unique_id_generator())
        if validate:
            try:
                await _check(Call(unique_id, action, copy.deepcopy(payload)))
            except OCPPError as exc:
                raise ValueError(f"{action} payload is not valid OCPP 1.6: {exc}") from exc
        frame = Call(unique_id, action, payload).to_json()
        async with self._call_lock:
            if self.closed:
                raise ConnectionLostError(f"{self.id}: connection closed, {action} not sent")
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending[unique_id] = future
            try:
                try:
                    await self._send(frame)
                except ConnectionClosed as exc:
                    raise ConnectionLostError(f"{self.id}: {action} not sent: {exc}") from exc
                stats.sent[action] += 1
                self.station.calls_sent.append((action, payload))
                try:
                    answer = await asyncio.wait_for(future, timeout)
                except TimeoutError:
                    stats.timeouts[action] += 1
                    stats.record_error(f"{action}: no answer within {timeout}s")
                    raise TimeoutError(
                        f"{self.id}: no answer to {action} within {timeout}s"
                    ) from None
            finally:
                self._pending.pop(unique_id, None)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, CallError):
            stats.call_errors[action] += 1
            stats.record_error(f"{action}: CallError {answer.error_code}")
            raise CallErrorReceived(
                action, answer.error_code, answer.error_description, answer.error_details
            )
        body = answer.payload
        if not isinstance(body, dict):
            stats.record_error(f"{action}: answer payload is not an object")
            raise InvalidResponseError(action, "payload is not an object", body)
        if validate:
            try:
                await _check(CallResult(unique_id, copy.deepcopy(body), action))
            except OCPPError as exc:
                stats.record_error(f"{action}: invalid answer")
                raise InvalidResponseError(action, str(exc), body) from exc
        stats.answered[action] += 1
        return body

    async def call(
        self,
        payload: Any,
        suppress: bool = True,
        unique_id: Any = None,
        skip_schema_validation: bool = False,
    ) -> Any:
        """The library's ``call()`` contract, served by :meth:`request` (``unique_id`` is
        ignored)."""
        try:
            return await self.station.call(payload, validate=not skip_schema_validation)
        except CallErrorReceived:
            if suppress:
                return None
            raise

    def fail_pending(self) -> None:
        """The connection is gone: every call waiting for an answer fails at once."""
        for unique_id, future in list(self._pending.items()):
            if not future.done():
                future.set_result(ConnectionLostError(f"{self.id}: connection lost ({unique_id})"))

    async def _send(self, message: str) -> None:
        log.debug("send", station=self.id, frame=message)
        await self._connection.send(message)

    async def _send_quietly(self, message: str) -> None:
        try:
            await self._send(message)
        except ConnectionClosed:
            log.debug("answer not sent, connection closed", station=self.id)

    async def _send_call_error(
        self, unique_id: str, code: str, description: str, details: dict[str, Any] | None = None
    ) -> None:
        await self._send_quietly(CallError(unique_id, code, description, details or {}).to_json())

    # ------------------------------------------------------------------ incoming

    async def route_message(self, raw_msg: Any) -> None:
        """Handle one frame; never raises except when the connection itself is gone."""
        try:
            await self._route(raw_msg)
        except ConnectionClosed:
            raise
        except Exception as exc:
            log.exception("frame handling failed", station=self.id)
            self.station.stats.record_error(f"frame handling failed: {exc!r}")

    async def _route(self, raw: Any) -> None:
        log.debug("receive", station=self.id, frame=raw)
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.station._push_unmatched(raw)
                return
        try:
            frame = json.loads(raw)
        except ValueError:
            log.warning("frame is not JSON", station=self.id, frame=raw[:200])
            self.station._push_unmatched(raw)
            return
        if not isinstance(frame, list) or len(frame) < 3 or not isinstance(frame[1], str):
            log.warning("frame is not OCPP-J", station=self.id, frame=raw[:200])
            self.station._push_unmatched(frame)
            return
        kind = frame[0]
        if kind == 2:
            if len(frame) != 4 or not isinstance(frame[2], str) or not isinstance(frame[3], dict):
                await self._send_call_error(
                    frame[1], "FormationViolation", "CALL must be [2, id, action, {payload}]"
                )
                return
            await self._handle_call(Call(frame[1], frame[2], frame[3]))
        elif kind in (3, 4):
            future = self._pending.get(frame[1])
            if future is None or future.done():
                self.station._push_unmatched(frame)
            elif kind == 3:
                future.set_result(CallResult(frame[1], frame[2]))
            else:
                description = frame[3] if len(frame) > 3 else ""
                details = frame[4] if len(frame) > 4 else {}
                future.set_result(CallError(frame[1], str(frame[2]), str(description), details))
        else:
            self.station._push_unmatched(frame)

    async def _handle_call(self, msg: Call) -> None:
        station = self.station
        station._record_call(msg.action, copy.deepcopy(msg.payload))
        override = station._overrides.get(msg.action)
        if override is not None:
            if await self._run_override(msg, override):
                return
        handlers = self.route_map.get(msg.action, {})
        handler = handlers.get("_on_action")
        if handler is None:
            code = "NotImplemented" if msg.action in _V16_ACTIONS else "NotSupported"
            await self._send_call_error(msg.unique_id, code, f"{msg.action} is not supported")
            return
        try:
            if not handlers.get("_skip_schema_validation", False):
                await _check(msg)
            outcome = handler(**camel_to_snake_case(msg.payload))
            if inspect.isawaitable(outcome):
                outcome = await outcome
        except OCPPError as exc:
            await self._send_call_error(
                msg.unique_id, _ocpp16_code(exc.code), exc.description, _plain_details(exc.details)
            )
            return
        except Exception as exc:
            log.exception("handler failed", station=self.id, action=msg.action)
            station.stats.record_error(f"{msg.action} handler failed: {exc!r}")
            await self._send_call_error(msg.unique_id, "InternalError", type(exc).__name__)
            return
        if outcome is IGNORE:
            return
        if not isinstance(outcome, Outcome):
            outcome = Outcome(outcome)
        if outcome.send:
            body = snake_to_camel_case(remove_nones(serialize_as_dict(outcome.answer)))
            answer = msg.create_call_result(body)
            try:
                await _check(answer)
            except OCPPError as exc:
                log.error("own answer invalid", station=self.id, action=msg.action, error=str(exc))
                station.stats.record_error(f"{msg.action}: own answer invalid")
                await self._send_call_error(msg.unique_id, "InternalError", "invalid answer")
                return
            await self._send_quietly(answer.to_json())
        if outcome.followup is not None:
            station._spawn(outcome.followup(), f"after-{msg.action}", followup=True)

    async def _run_override(self, msg: Call, override: Callable[[dict[str, Any]], Any]) -> bool:
        """Apply an ``on_call`` override; False when the default handling should go on."""
        try:
            reply = override(copy.deepcopy(msg.payload))
            if inspect.isawaitable(reply):
                reply = await reply
        except Exception as exc:
            log.exception("on_call override failed", station=self.id, action=msg.action)
            self.station.stats.record_error(f"{msg.action} override failed: {exc!r}")
            await self._send_call_error(msg.unique_id, "InternalError", type(exc).__name__)
            return True
        if reply is None:
            return False
        if reply is IGNORE:
            return True
        if isinstance(reply, CallErrorReply):
            await self._send_call_error(
                msg.unique_id, reply.code, reply.description, dict(reply.details)
            )
        elif isinstance(reply, dict):
            await self._send_quietly(CallResult(msg.unique_id, reply).to_json())
        else:
            log.error(
                "on_call override returned an unusable value", station=self.id, value=repr(reply)
            )
            await self._send_call_error(msg.unique_id, "InternalError", "bad override result")
        return True

    # ------------------------------------------------------------------ Core profile

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str, **_: Any) -> Any:
        st = self.station
        if key == "SecurityProfile":
            status, wanted = st.security.change_profile(value)
            if wanted is None:
                return result.ChangeConfiguration(status=status)
            return Outcome(
                result.ChangeConfiguration(status=status),
                lambda: st.security.switch_profile(wanted),
            )
        status = st.config.change(key, value)
        if status == "Accepted":
            st._on_config_changed(key)
        return result.ChangeConfiguration(status=status)

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        known, unknown = self.station.config.report(key)
        return result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.remote_start_transaction)
    def on_remote_start_transaction(
        self, id_tag: str, connector_id: int | None = None, **_: Any
    ) -> Any:
        st = self.station
        mode = st.behaviour.remote_start
        if mode == "ignore":
            return IGNORE
        rejected = result.RemoteStartTransaction(status="Rejected")
        if mode == "reject":
            return rejected
        accepted = result.RemoteStartTransaction(status="Accepted")
        if mode == "accept_no_tx":
            return accepted
        chosen = st._pick_remote_connector(connector_id, id_tag)
        if chosen is None:
            return rejected
        st.connectors[chosen].claimed = True
        return Outcome(
            accepted,
            lambda: st._remote_start_flow(chosen, id_tag, mode == "accept_timeout"),
            send=mode != "lost_conf",
        )

    @on(Action.remote_stop_transaction)
    def on_remote_stop_transaction(self, transaction_id: int, **_: Any) -> Any:
        st = self.station
        mode = st.behaviour.remote_stop
        if mode == "ignore":
            return IGNORE
        conn = st._connector_by_transaction(transaction_id)
        if mode == "reject" or conn is None:
            return result.RemoteStopTransaction(status="Rejected")
        connector_id = conn.connector_id
        return Outcome(
            result.RemoteStopTransaction(status="Accepted"),
            lambda: st._remote_stop_flow(connector_id),
            send=mode != "lost_conf",
        )

    @on(Action.unlock_connector)
    def on_unlock_connector(self, connector_id: int, **_: Any) -> Any:
        st = self.station
        mode = st.behaviour.unlock
        if mode == "ignore":
            return IGNORE
        if not 1 <= connector_id <= st.number_of_connectors:
            return result.UnlockConnector(status="NotSupported")
        if mode != "Unlocked":
            return result.UnlockConnector(status=mode)
        answer = result.UnlockConnector(status="Unlocked")
        if st.connectors[connector_id].in_transaction:
            return Outcome(answer, lambda: st._unlock_flow(connector_id))
        return answer

    @on(Action.reset)
    def on_reset(self, type: str, **_: Any) -> Any:
        st = self.station
        mode = st.behaviour.reset
        if mode == "ignore":
            return IGNORE
        if mode == "Rejected":
            return result.Reset(status="Rejected")
        return Outcome(result.Reset(status="Accepted"), lambda: st._reset_flow(type))

    @on(Action.change_availability)
    def on_change_availability(self, connector_id: int, type: str, **_: Any) -> Any:
        st = self.station
        if not 0 <= connector_id <= st.number_of_connectors:
            return result.ChangeAvailability(status="Rejected")
        if connector_id == 0:
            targets = sorted(st.connectors)
        else:
            targets = [connector_id]
        scheduled = False
        for target in targets:
            conn = st.connectors[target]
            if conn.in_transaction and type == "Inoperative":
                conn.pending_availability = type
                scheduled = True
            else:
                conn.availability = type
                conn.pending_availability = None
        status = "Scheduled" if scheduled else "Accepted"
        return Outcome(
            result.ChangeAvailability(status=status), lambda: st._availability_flow(targets)
        )

    @on(Action.clear_cache)
    def on_clear_cache(self, **_: Any) -> Any:
        self.station.auth_cache.clear()
        return result.ClearCache(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(
        self, vendor_id: str, message_id: str | None = None, data: Any = None, **_: Any
    ) -> Any:
        st = self.station
        status = st._cost_message(vendor_id, message_id, data)
        return result.DataTransfer(status=status or st.behaviour.data_transfer)

    # ------------------------------------------------------------------ Remote trigger

    @on(Action.trigger_message)
    def on_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> Any:
        st = self.station
        return self._trigger(
            result.TriggerMessage, st._trigger_flow, requested_message, connector_id
        )

    def _trigger(
        self, answer: Any, flow: Any, requested_message: str, connector_id: int | None
    ) -> Any:
        """TriggerMessage and ExtendedTriggerMessage: the connector checked, the answer from
        the behaviour, then the requested message sent by ``flow``."""
        st = self.station
        if connector_id is not None and not 0 <= connector_id <= st.number_of_connectors:
            return answer(status="Rejected")
        mode = st.behaviour.trigger
        if mode != "Accepted":
            return answer(status=mode)
        return Outcome(answer(status="Accepted"), lambda: flow(requested_message, connector_id))

    # ------------------------------------------------------------------ Security extension

    @on(Action.extended_trigger_message)
    def on_extended_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> Any:
        flow = self.station._extended_trigger_flow
        return self._trigger(result.ExtendedTriggerMessage, flow, requested_message, connector_id)

    @on(Action.certificate_signed)
    def on_certificate_signed(self, certificate_chain: str, **_: Any) -> Any:
        sec = self.station.security
        status, why = sec.certificate_signed(certificate_chain)
        if status == "Accepted":
            return result.CertificateSigned(status=status)
        self.station.log.warning("signed certificate refused", reason=why)
        return Outcome(
            result.CertificateSigned(status=status),
            lambda: sec.event("InvalidChargePointCertificate", why),
        )

    @on(Action.install_certificate)
    def on_install_certificate(self, certificate_type: str, certificate: str, **_: Any) -> Any:
        status = self.station.security.install_certificate(certificate_type, certificate)
        return result.InstallCertificate(status=status)

    @on(Action.get_installed_certificate_ids)
    def on_get_installed_certificate_ids(self, certificate_type: str, **_: Any) -> Any:
        ids = self.station.security.installed_ids(certificate_type)
        if not ids:
            return result.GetInstalledCertificateIds(status="NotFound")
        return result.GetInstalledCertificateIds(status="Accepted", certificate_hash_data=ids)

    @on(Action.delete_certificate)
    def on_delete_certificate(self, certificate_hash_data: dict[str, Any], **_: Any) -> Any:
        status = self.station.security.delete_certificate(certificate_hash_data)
        return result.DeleteCertificate(status=status)

    @on(Action.get_log)
    def on_get_log(self, log: dict[str, Any], log_type: str, request_id: int, **_: Any) -> Any:
        st = self.station
        url = log.get("remote_location", "")
        name = f"{log_type.lower()}-{st.id}-{iso().replace(':', '')}.log"
        return Outcome(
            result.GetLog(status="Accepted", filename=name[:255]),
            lambda: st.security.upload_log(url, log_type, request_id),
        )

    @on(Action.signed_update_firmware)
    def on_signed_update_firmware(self, firmware: dict[str, Any], request_id: int, **_: Any) -> Any:
        sec = self.station.security
        if not sec.check_signing_certificate(firmware.get("signing_certificate", "")):
            return Outcome(
                result.SignedUpdateFirmware(status="InvalidCertificate"),
                lambda: sec.event("InvalidFirmwareSigningCertificate", f"request {request_id}"),
            )
        return Outcome(
            result.SignedUpdateFirmware(status="Accepted"),
            lambda: sec.signed_firmware(firmware, request_id),
        )

    # ------------------------------------------------------------------ Firmware management

    @on(Action.get_diagnostics)
    def on_get_diagnostics(
        self,
        location: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> Any:
        st = self.station
        name = f"diagnostics-{st.id}-{iso().replace(':', '')}.log"
        return Outcome(
            result.GetDiagnostics(file_name=name),
            lambda: st._diagnostics_flow(location, name, retries, retry_interval),
        )

    @on(Action.update_firmware)
    def on_update_firmware(
        self,
        location: str,
        retrieve_date: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> Any:
        st = self.station
        return Outcome(
            result.UpdateFirmware(),
            lambda: st._firmware_flow(retrieve_date, location, retries, retry_interval),
        )

    # ------------------------------------------------------------------ Local auth list

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_: Any) -> Any:
        st = self.station
        # (OCPP 1.6: -1 when the local authorization list is disabled)
        enabled = st.config.get_bool("LocalAuthListEnabled", True)
        return result.GetLocalListVersion(list_version=st.local_list_version if enabled else -1)

    @on(Action.send_local_list)
    def on_send_local_list(
        self,
        list_version: int,
        update_type: str,
        local_authorization_list: list[dict[str, Any]] | None = None,
        **_: Any,
    ) -> Any:
        st = self.station
        if not st.config.get_bool("LocalAuthListEnabled", True):
            return result.SendLocalList(status="NotSupported")
        entries = local_authorization_list or []
        if len(entries) > st.config.get_int("SendLocalListMaxLength", 100):
            return result.SendLocalList(status="Failed")
        if update_type != "Full" and list_version <= st.local_list_version:
            return result.SendLocalList(status="VersionMismatch")
        # applied whole or not at all: Failed when the list would exceed LocalAuthListMaxLength
        updated = {} if update_type == "Full" else dict(st.local_auth_list)
        for entry in entries:
            tag = entry["id_tag"]
            info = entry.get("id_tag_info")
            if info is None:
                updated.pop(tag, None)
            else:
                updated[tag] = snake_to_camel_case(info)
        if len(updated) > st.config.get_int("LocalAuthListMaxLength", 100):
            return result.SendLocalList(status="Failed")
        st.local_auth_list = updated
        st.local_list_version = list_version
        return result.SendLocalList(status="Accepted")

    # ------------------------------------------------------------------ Reservation

    @on(Action.reserve_now)
    def on_reserve_now(
        self,
        connector_id: int,
        expiry_date: str,
        id_tag: str,
        reservation_id: int,
        parent_id_tag: str | None = None,
        **_: Any,
    ) -> Any:
        st = self.station
        if not 0 <= connector_id <= st.number_of_connectors:
            return result.ReserveNow(status="Rejected")
        if connector_id == 0 and not st.config.get_bool("ReserveConnectorZeroSupported"):
            return result.ReserveNow(status="Rejected")
        conn = st.connectors[connector_id]
        holder = st._reservation_holder(reservation_id)
        if conn.status == "Faulted":
            return result.ReserveNow(status="Faulted")
        if conn.availability == "Inoperative" or conn.status == "Unavailable":
            return result.ReserveNow(status="Unavailable")
        busy = conn.in_transaction or conn.status not in ("Available", "Reserved")
        if busy or (conn.reservation is not None and holder is not conn):
            return result.ReserveNow(status="Occupied")
        if holder is not None:
            holder.reservation = None
        conn.reservation = {
            "reservationId": reservation_id,
            "idTag": id_tag,
            "expiryDate": expiry_date,
            "parentIdTag": parent_id_tag,
        }
        return Outcome(
            result.ReserveNow(status="Accepted"),
            lambda: st._reservation_flow(connector_id, reservation_id),
        )

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, reservation_id: int, **_: Any) -> Any:
        st = self.station
        holder = st._reservation_holder(reservation_id)
        if holder is None:
            return result.CancelReservation(status="Rejected")
        holder.reservation = None
        connector_id = holder.connector_id
        return Outcome(
            result.CancelReservation(status="Accepted"),
            lambda: st._cancel_reservation_flow(connector_id),
        )

    # ------------------------------------------------------------------ Smart charging

    @on(Action.set_charging_profile)
    def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any
    ) -> Any:
        st = self.station
        why = st.install_profile(connector_id, cs_charging_profiles)
        if why is not None:
            st.log.info("charging profile rejected", reason=why)
            return result.SetChargingProfile(status="Rejected")
        return Outcome(result.SetChargingProfile(status="Accepted"), st._limits_changed)

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ) -> Any:
        st = self.station
        if not st.clear_profiles(id, connector_id, charging_profile_purpose, stack_level):
            return result.ClearChargingProfile(status="Unknown")
        return Outcome(result.ClearChargingProfile(status="Accepted"), st._limits_changed)

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None, **_: Any
    ) -> Any:
        answer = self.station.composite_schedule(connector_id, duration, charging_rate_unit)
        if answer is None:
            return result.GetCompositeSchedule(status="Rejected")
        return result.GetCompositeSchedule(**answer)
