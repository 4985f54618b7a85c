"""OCPP-J 1.6 framing: parsing, validation and the CallError codes of the specification.

We parse frames ourselves rather than through ``ocpp.ChargePoint.route_message`` so that
every malformed frame gets the CallError that OCPP-J 1.6 names (spelled ``FormationViolation``
there, which the library gets wrong) and nothing can kill a connection's receive loop. The
JSON schemas are the `ocpp` library's. Each payload is first checked by a validator compiled
from its schema (fastjsonschema: some twenty times faster than the library's jsonschema
validator, which was a quarter of the server's CPU under load); only a payload it refuses
goes through the library's validator, whose verdict and error decide. So the fast path can
only save time, never change an answer: payloads with a timestamp the fast validator finds
badly formatted, for instance, are still accepted as before.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import fastjsonschema
from jsonschema import Draft4Validator
from ocpp.messages import get_validator

CALL, CALLRESULT, CALLERROR = 2, 3, 4
OCPP_VERSION = "1.6"
MAX_UNIQUE_ID_LENGTH = 36

# Requests a charge point sends to the central system.
CP_ACTIONS = frozenset(
    {
        "Authorize",
        "BootNotification",
        "DataTransfer",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StartTransaction",
        "StatusNotification",
        "StopTransaction",
    }
)
# Requests the central system sends to a charge point.
CS_ACTIONS = frozenset(
    {
        "CancelReservation",
        "ChangeAvailability",
        "ChangeConfiguration",
        "ClearCache",
        "ClearChargingProfile",
        "DataTransfer",
        "GetCompositeSchedule",
        "GetConfiguration",
        "GetDiagnostics",
        "GetLocalListVersion",
        "RemoteStartTransaction",
        "RemoteStopTransaction",
        "ReserveNow",
        "Reset",
        "SendLocalList",
        "SetChargingProfile",
        "TriggerMessage",
        "UnlockConnector",
        "UpdateFirmware",
    }
)
# In OCPP 1.6 but not something a charge point may ask of us (including the security
# whitepaper's messages, which need a security profile we do not implement yet).
OTHER_16_ACTIONS = frozenset(
    {
        "SecurityEventNotification",
        "SignCertificate",
        "LogStatusNotification",
        "SignedFirmwareStatusNotification",
    }
)
# The 1.6 schemas have `multipleOf: 0.1` in these; they are validated with Decimals. The
# library caches one validator per schema whatever it was loaded with, so we must load these
# exactly as it does.
_DECIMAL_SCHEMAS = frozenset(
    {(2, "SetChargingProfile"), (2, "RemoteStartTransaction"), (3, "GetCompositeSchedule")}
)


class OcppError(Exception):
    """An error that is answered to the peer as a CallError."""

    code = "GenericError"

    def __init__(self, description: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.details = details or {}


def _error(code: str) -> type[OcppError]:
    return type(code + "Error", (OcppError,), {"code": code})


NotImplementedErr = _error("NotImplemented")
NotSupportedErr = _error("NotSupported")
InternalErr = _error("InternalError")
ProtocolErr = _error("ProtocolError")
SecurityErr = _error("SecurityError")
FormationViolation = _error("FormationViolation")  # sic: OCPP-J 1.6's spelling
PropertyConstraintViolation = _error("PropertyConstraintViolation")
OccurenceConstraintViolation = _error("OccurenceConstraintViolation")  # sic
TypeConstraintViolation = _error("TypeConstraintViolation")
GenericErr = _error("GenericError")

ERROR_CODES = frozenset(
    {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
    }
)


@dataclass(frozen=True, slots=True)
class Call:
    unique_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallResult:
    unique_id: str
    payload: Any


@dataclass(frozen=True, slots=True)
class CallError:
    unique_id: str
    code: str
    description: str
    details: Any


Frame = Call | CallResult | CallError


class FrameError(Exception):
    """A frame we could not accept. ``unique_id`` is set when it can still be answered."""

    def __init__(self, error: OcppError, unique_id: str | None) -> None:
        super().__init__(error.description)
        self.error = error
        self.unique_id = unique_id


_CALL_ID = re.compile(r'^\s*\[\s*2\s*,\s*"([^"\\]{1,36})"')


def parse_frame(text: str | bytes) -> Frame:
    """Parse one websocket message into a Call, CallResult or CallError.

    Raises FrameError; its ``unique_id`` is the id to answer with when the frame is a Call
    whose id could be read, and None when nothing sensible can be answered.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError(FormationViolation("frame is not UTF-8 text"), None) from None
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as e:
        m = _CALL_ID.match(text)
        raise FrameError(
            FormationViolation(f"frame is not valid JSON: {e.msg} at position {e.pos}"),
            m.group(1) if m else None,
        ) from None
    if not isinstance(msg, list) or not msg:
        raise FrameError(FormationViolation("frame is not a JSON array"), None)
    kind = msg[0]
    uid = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else None
    if kind == CALL:
        if uid is None:
            raise FrameError(FormationViolation("call without a string unique id"), None)
        if len(uid) > MAX_UNIQUE_ID_LENGTH:
            raise FrameError(
                FormationViolation(f"unique id longer than {MAX_UNIQUE_ID_LENGTH} characters"),
                uid,
            )
        if len(msg) != 4:
            raise FrameError(
                FormationViolation(f"a call has 4 elements, this one has {len(msg)}"), uid
            )
        action, payload = msg[2], msg[3]
        if not isinstance(action, str):
            raise FrameError(FormationViolation("action is not a string"), uid)
        if not isinstance(payload, dict):
            raise FrameError(FormationViolation("payload is not a JSON object"), uid)
        return Call(uid, action, payload)
    if kind == CALLRESULT:
        if uid is None or len(msg) != 3:
            raise FrameError(FormationViolation("malformed CallResult"), None)
        return CallResult(uid, msg[2])
    if kind == CALLERROR:
        if uid is None or len(msg) not in (4, 5):
            raise FrameError(FormationViolation("malformed CallError"), None)
        details = msg[4] if len(msg) == 5 else {}
        return CallError(uid, str(msg[2]), str(msg[3]), details)
    raise FrameError(FormationViolation(f"unknown message type id {kind!r}"), None)


def _validator(kind: int, action: str) -> Draft4Validator:
    parse_float = Decimal if (kind, action) in _DECIMAL_SCHEMAS else float
    return get_validator(kind, action, OCPP_VERSION, parse_float=parse_float)


def prewarm_validators() -> None:
    """Load every 1.6 schema once at start-up, off the hot path."""
    for action in CP_ACTIONS | CS_ACTIONS:
        for kind in (CALL, CALLRESULT):
            validator = _validator(kind, action)
            if (kind, action) not in _DECIMAL_SCHEMAS:
                _fast_validator(kind, action, validator)


def _schema_error(exc: Any) -> OcppError:
    path = "/".join(str(p) for p in exc.absolute_path)
    where = f" at {path}" if path else ""
    details = {"cause": exc.message + where}
    kind = exc.validator
    if kind == "required":
        return ProtocolErr(f"payload is incomplete: {exc.message}", details)
    if kind == "additionalProperties":
        return FormationViolation(f"unexpected property: {exc.message}", details)
    if kind in ("type", "maxLength"):
        return TypeConstraintViolation(f"{exc.message}{where}", details)
    return PropertyConstraintViolation(f"{exc.message}{where}", details)


_FAST: dict[tuple[int, str], Any] = {}


def _fast_validator(kind: int, action: str, validator: Draft4Validator) -> Any:
    fast = _FAST.get((kind, action))
    if fast is None:
        # no defaults filled in (the payload is not ours to change), formats left to the
        # library's validator, which does not check them either
        fast = _FAST[(kind, action)] = fastjsonschema.compile(
            validator.schema, use_default=False, use_formats=False
        )
    return fast


def check_payload(kind: int, action: str, payload: Any) -> None:
    """Validate against the 1.6 schema; raise the OcppError a peer would be answered with."""
    try:
        validator = _validator(kind, action)
    except OSError:
        raise NotImplementedErr(f"no schema for {action}") from None
    if (kind, action) not in _DECIMAL_SCHEMAS:
        try:
            _fast_validator(kind, action, validator)(payload)
            return
        except fastjsonschema.JsonSchemaException:
            pass  # the library's validator decides, and names the error
    else:
        payload = json.loads(json.dumps(payload), parse_float=Decimal)
    error = next(iter(validator.iter_errors(payload)), None)
    if error is not None:
        raise _schema_error(error)


def check_incoming_action(action: str) -> None:
    if action in CP_ACTIONS:
        return
    if action in CS_ACTIONS or action in OTHER_16_ACTIONS:
        raise NotSupportedErr(f"{action} is not something a charge point may request")
    raise NotImplementedErr(f"unknown action {action!r}")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_default)


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def call_frame(unique_id: str, action: str, payload: dict[str, Any]) -> str:
    return _dumps([CALL, unique_id, action, payload])


def result_frame(unique_id: str, payload: dict[str, Any]) -> str:
    return _dumps([CALLRESULT, unique_id, payload])


def error_frame(unique_id: str, error: OcppError) -> str:
    return _dumps([CALLERROR, unique_id, error.code, error.description[:255], error.details])
