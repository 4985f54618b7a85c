"""The operator commands offered on a station's page, and their payloads from form fields.

Each form posts to ``/stations/{id}/commands/{Action}``; the payload goes through the
central system's command port (:class:`csms.commands.CommandPort`), which checks it against
the OCPP 1.6 schema, so this module only turns text fields into the right JSON types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TRIGGERABLE = (
    "BootNotification",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StatusNotification",
)


@dataclass(frozen=True, slots=True)
class CommandField:
    name: str  # the OCPP payload field
    kind: str = "str"  # str | int | choice | list (comma-separated)
    required: bool = True
    choices: tuple[str, ...] = ()
    default: str = ""
    hint: str = ""


@dataclass(frozen=True, slots=True)
class CommandForm:
    action: str
    fields: tuple[CommandField, ...] = ()


COMMANDS: tuple[CommandForm, ...] = (
    CommandForm(
        "RemoteStartTransaction",
        (
            CommandField("idTag", hint="04ABBE2A266581"),
            CommandField("connectorId", "int", required=False, default="1"),
        ),
    ),
    CommandForm("RemoteStopTransaction", (CommandField("transactionId", "int"),)),
    CommandForm("UnlockConnector", (CommandField("connectorId", "int", default="1"),)),
    CommandForm("Reset", (CommandField("type", "choice", choices=("Soft", "Hard")),)),
    CommandForm(
        "ChangeAvailability",
        (
            CommandField("connectorId", "int", default="0"),
            CommandField("type", "choice", choices=("Inoperative", "Operative")),
        ),
    ),
    CommandForm(
        "TriggerMessage",
        (
            CommandField("requestedMessage", "choice", choices=TRIGGERABLE),
            CommandField("connectorId", "int", required=False),
        ),
    ),
    CommandForm(
        "GetConfiguration",
        (CommandField("key", "list", required=False, hint="HeartbeatInterval, ..."),),
    ),
    CommandForm(
        "ChangeConfiguration",
        (CommandField("key", hint="HeartbeatInterval"), CommandField("value", hint="120")),
    ),
    CommandForm("ClearCache"),
)
BY_ACTION = {c.action: c for c in COMMANDS}


class FormError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def payload_from_form(action: str, form: Mapping[str, Any]) -> dict[str, Any]:
    """The OCPP payload of ``action`` from posted form fields. Raises KeyError for an action
    that has no form, FormError for a field that is missing or not a number."""
    spec = BY_ACTION[action]
    payload: dict[str, Any] = {}
    for f in spec.fields:
        raw = str(form.get(f.name, "")).strip()
        if not raw:
            if f.required:
                raise FormError(f.name, "required")
            continue
        if f.kind == "int":
            try:
                payload[f.name] = int(raw)
            except ValueError:
                raise FormError(f.name, "must be a whole number") from None
        elif f.kind == "list":
            payload[f.name] = [k.strip() for k in raw.split(",") if k.strip()]
        elif f.kind == "choice" and raw not in f.choices:
            raise FormError(f.name, f"must be one of {', '.join(f.choices)}")
        else:
            payload[f.name] = raw
    return payload
