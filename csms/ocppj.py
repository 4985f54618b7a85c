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
import math
import re
import threading
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
        # the security extension ("Improved security for OCPP 1.6-J"), csms.security
        "LogStatusNotification",
        "SecurityEventNotification",
        "SignCertificate",
        "SignedFirmwareStatusNotification",
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
        # the security extension
        "CertificateSigned",
        "DeleteCertificate",
        "ExtendedTriggerMessage",
        "GetInstalledCertificateIds",
        "GetLog",
        "InstallCertificate",
        "SignedUpdateFirmware",
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
    unique_id: str  # exactly as sent (what the answer must carry)
    action: str
    payload: dict[str, Any]
    # integers SQLite cannot hold, clamped in ``payload``: (path, the original in decimal)
    out_of_range: tuple[tuple[str, str], ...] = ()
    # strings whose lone surrogates ("\ud800") were replaced by U+FFFD: their paths
    invalid_unicode: tuple[str, ...] = ()


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


# the unique id of a call that is not valid JSON, when its beginning is intact
_CALL_ID = re.compile(r'^\s*\[\s*2\s*,\s*"([^"\\]{1,36})"')
# OCPP payloads are a few levels deep (MeterValues: 6 with the frame); anything deeper is
# refused before it can exhaust a recursion somewhere (validators, logs, the database)
MAX_DEPTH = 32
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# cheap tests on the raw text, so that the walks below run only when they can find something
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _NotJson(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise _NotJson(f"number {text[:40]} is out of range")
    return value


class _Seen(threading.local):
    long_int = False  # an integer of 19 digits or more in the frame being parsed


_seen = _Seen()


def _int(text: str) -> int:
    if len(text) > 18:
        _seen.long_int = True
    return int(text)


# one decoder for every frame (json.loads with options would build one each time)
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float, parse_int=_int)


def _loads(text: str) -> tuple[Any, bool]:
    """JSON as RFC 8259 has it: no NaN or Infinity, no number that overflows a double.
    Also says whether an integer may be beyond 64 bits (19 digits or more)."""
    _seen.long_int = False
    value = _DECODER.decode(text)
    return value, _seen.long_int


def parse_frame(text: str | bytes) -> Frame:
    """Parse one websocket message into a Call, CallResult or CallError.

    Raises FrameError; its ``unique_id`` is the id to answer with when the frame is not a
    CallResult or CallError and its id could be read, and None when nothing sensible can be
    answered. The message type must be the integer 2, 3 or 4 (not ``2.0``, ``"2"``, ``true``).
    A lone surrogate in a string is replaced by U+FFFD (noted in ``invalid_unicode``); an
    integer beyond SQLite's 64 bits in a call is clamped to the nearest one it holds (noted,
    with the original, in ``out_of_range``).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError(FormationViolation("frame is not UTF-8 text"), None) from None
    try:
        msg, long_int = _loads(text)
    except RecursionError:
        m = _CALL_ID.match(text)
        raise FrameError(
            FormationViolation(f"frame is nested deeper than {MAX_DEPTH} levels"),
            m.group(1) if m else None,
        ) from None
    except ValueError as e:
        m = _CALL_ID.match(text)
        if isinstance(e, json.JSONDecodeError):
            why = f"frame is not valid JSON: {e.msg} at position {e.pos}"
        else:
            why = f"frame is not valid JSON: {e}"
        raise FrameError(FormationViolation(why), m.group(1) if m else None) from None
    if not isinstance(msg, list) or not msg:
        raise FrameError(FormationViolation("frame is not a JSON array"), None)
    kind = msg[0]
    uid = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else None
    exact = type(kind) is int
    if exact and kind in (CALLRESULT, CALLERROR):
        answerable = None  # an answer is never answered
    else:
        answerable = uid
    if (text.count("[") + text.count("{") > MAX_DEPTH) and _too_deep(msg, MAX_DEPTH):
        raise FrameError(
            FormationViolation(f"frame is nested deeper than {MAX_DEPTH} levels"), answerable
        )
    repaired: list[str] = []  # paths in a call's payload (element 3)
    if _ESCAPED_SURROGATE.search(text) is not None:
        for i in range(2, len(msg)):
            msg[i] = _repair(msg[i], "", repaired if i == 3 else [])
    if not exact or kind not in (CALL, CALLRESULT, CALLERROR):
        raise FrameError(
            FormationViolation(f"unknown message type id {_short(kind)}; 2, 3 or 4 expected"),
            answerable,
        )
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
        clamped: list[tuple[str, str]] = []
        if long_int:
            _clamp(payload, "", clamped)
        return Call(uid, action, payload, tuple(clamped), tuple(repaired))
    if kind == CALLRESULT:
        if uid is None or len(msg) != 3:
            raise FrameError(FormationViolation("malformed CallResult"), None)
        return CallResult(uid, msg[2])
    if uid is None or len(msg) not in (4, 5):
        raise FrameError(FormationViolation("malformed CallError"), None)
    details = msg[4] if len(msg) == 5 else {}
    return CallError(uid, str(msg[2]), str(msg[3]), details)


def _short(value: Any) -> str:
    """A JSON value as the station wrote it, at most 40 characters."""
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):
        text = "?"
    return text if len(text) <= 40 else text[:37] + "..."


def _too_deep(obj: Any, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        o, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(o, dict):
            stack.extend((v, depth + 1) for v in o.values() if isinstance(v, dict | list))
        elif isinstance(o, list):
            stack.extend((v, depth + 1) for v in o if isinstance(v, dict | list))
    return False


def repair_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (it has no UTF-8 form)."""
    return _SURROGATE.sub("\ufffd", text)


def _repair(value: Any, path: str, repaired: list[str]) -> Any:
    """Replace lone surrogates in every string of ``value`` (fresh from the JSON parser, so
    changed in place); note the paths of the strings that had one. The depth is bounded
    by the caller (MAX_DEPTH)."""
    if isinstance(value, str):
        if _SURROGATE.search(value) is None:
            return value
        repaired.append(path)
        return repair_text(value)
    if isinstance(value, list):
        for i, item in enumerate(value):
            value[i] = _repair(item, f"{path}/{i}" if path else str(i), repaired)
    elif isinstance(value, dict):
        for key in list(value):
            item = value[key]
            new_key = key
            if _SURROGATE.search(key) is not None:
                new_key = repair_text(key)
                del value[key]
            where = f"{path}/{new_key}" if path else new_key
            if new_key is not key:
                repaired.append(where)
            value[new_key] = _repair(item, where, repaired)
    return value


def _clamp(value: Any, path: str, clamped: list[tuple[str, str]]) -> None:
    """Clamp, in place, the integers of ``value`` to SQLite's signed 64 bits."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in list(items):
        where = f"{path}/{key}" if path else str(key)
        if type(item) is int and not INT64_MIN <= item <= INT64_MAX:
            clamped.append((where, str(item)))
            value[key] = INT64_MAX if item > 0 else INT64_MIN
        elif isinstance(item, dict | list):
            _clamp(item, where, clamped)


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
    details = {"cause": (exc.message + where)[:500]}  # the message may quote a huge value
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
    if action in CS_ACTIONS:
        raise NotSupportedErr(f"{action} is not something a charge point may request")
    raise NotImplementedErr(f"unknown action {action!r}")


def _dumps(obj: Any) -> str:
    """Compact JSON text that can always be sent: RFC 8259 numbers only (ValueError for
    NaN or Infinity), and escapes instead of lone surrogates, which have no UTF-8 form (a
    station's unique id may hold one: the answer must carry it back unchanged)."""
    text = json.dumps(
        obj, separators=(",", ":"), ensure_ascii=False, default=_default, allow_nan=False
    )
    if _SURROGATE.search(text) is not None:
        text = json.dumps(obj, separators=(",", ":"), default=_default, allow_nan=False)
    return text


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
