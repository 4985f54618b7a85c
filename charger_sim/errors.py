"""Exceptions raised by the simulator and the markers that ``Station.on_call`` handlers return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class SimulatorError(Exception):
    """Base class of the simulator's own errors."""


class NotConnectedError(SimulatorError, ConnectionError):
    """The station has no open connection, and the message is not one that is queued offline."""


class ConnectionLostError(NotConnectedError):
    """The connection closed before the central system answered the call."""


class CallErrorReceived(SimulatorError):
    """The central system answered a call with a CALLERROR frame.

    ``code``, ``description`` and ``details`` are the frame's errorCode, errorDescription and
    errorDetails; ``action`` is the action of the call that was answered.
    """

    def __init__(self, action: str, code: str, description: str = "", details: Any = None):
        super().__init__(f"{action}: CallError {code}: {description}")
        self.action = action
        self.code = code
        self.description = description
        self.details = details if details is not None else {}


class InvalidResponseError(SimulatorError):
    """The central system's answer is malformed or does not match the OCPP 1.6 schema.

    ``payload`` is the answer as received (when it could be read), ``reason`` says what is wrong.
    """

    def __init__(self, action: str, reason: str, payload: Any = None):
        super().__init__(f"{action}: invalid answer: {reason}")
        self.action = action
        self.reason = reason
        self.payload = payload


class SubprotocolError(SimulatorError, ConnectionError):
    """The server accepted the websocket without selecting one of the offered subprotocols."""


class _Ignore:
    """Marker: do not answer the call at all."""

    _instance: _Ignore | None = None

    def __new__(cls) -> _Ignore:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "Station.IGNORE"


IGNORE = _Ignore()


@dataclass(frozen=True)
class CallErrorReply:
    """Marker: answer the call with a CALLERROR frame.

    ``Station.CALL_ERROR("NotSupported", "no such thing")`` builds one; ``details`` defaults to
    an empty object.
    """

    code: str
    description: str = ""
    details: dict[str, Any] = field(default_factory=dict)
