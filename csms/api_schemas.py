"""What csms's own ``/api/v1`` answers look like, for the contract (csms.openapi).

The bodies the API takes are the pydantic models of csms.model (one definition for the
validation and the contract); the answers are described here, next to nothing else, and
``tests/test_openapi.py`` checks every real answer against them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .model import IdTagDef, StationDef
from .openapi import (
    ANY,
    BOOL,
    COMPONENTS,
    INT,
    NUM,
    STR,
    TIME,
    add_component,
    array,
    nullable,
    obj,
)


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A pydantic model's JSON schema as a component (its sub-models as components too)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        COMPONENTS[name] = sub
    return add_component(model.__name__, schema)


N_STR = nullable(STR)
N_INT = nullable(INT)
N_TIME = nullable(TIME)

CONNECTOR = add_component(
    "ConnectorState",
    obj(
        {
            "connector_id": INT,
            "status": N_STR,
            "error_code": N_STR,
            "info": N_STR,
            "vendor_error_code": N_STR,
            "timestamp": N_TIME,
            "timestamp_original": N_STR,
            "received_at": N_TIME,
        }
    ),
)

STATION = add_component(
    "Station",
    obj(
        {
            "id": STR,
            "defined": BOOL,
            "location": nullable(obj()),
            "evses": array(obj()),
            "boot_status": N_STR,
            "has_password": BOOL,
            "security_profile": {"type": "integer", "enum": [1, 2, 3]},
            "pending_security_profile": N_INT,
            "connected": BOOL,
            "last_seen": N_TIME,
            "connectors": array(CONNECTOR),
            "boot": obj(
                {
                    "vendor": N_STR,
                    "model": N_STR,
                    "serial_number": N_STR,
                    "firmware_version": N_STR,
                    "first_boot_at": N_TIME,
                    "last_boot_at": N_TIME,
                    "notification": ANY,
                }
            ),
            "configuration": obj(
                {"status": N_STR, "reasons": ANY, "checked_at": N_TIME, "snapshot": ANY},
                optional=("snapshot",),
            ),
            "retired": BOOL,
            "retired_at": N_TIME,
            "retired_reason": N_STR,
            "diagnostics_status": N_STR,
            "firmware_status": N_STR,
            "created_at": N_TIME,
            "updated_at": N_TIME,
        },
        description="a station: its definition and its live state",
    ),
)

STATION_BODY = model_schema(StationDef)
ID_TAG_BODY = model_schema(IdTagDef)

ID_TAG = add_component(
    "IdTag",
    obj(
        {
            "id_tag": STR,
            "status": STR,
            "expiry_date": N_TIME,
            "parent_id_tag": N_STR,
            "created_at": N_TIME,
            "updated_at": N_TIME,
        }
    ),
)

TRANSACTION = add_component(
    "Transaction",
    obj(
        {
            "id": INT,
            "station_id": STR,
            "connector_id": INT,
            "id_tag": STR,
            "id_tag_status": N_STR,
            "reservation_id": N_INT,
            "active": BOOL,
            "meter_start_wh": INT,
            "meter_stop_wh": N_INT,
            "energy_wh": N_INT,
            "start_time": N_TIME,
            "start_time_original": N_STR,
            "stop_time": N_TIME,
            "stop_time_original": N_STR,
            "stop_reason": N_STR,
            "stop_id_tag": N_STR,
            "flags": ANY,
            "tag_owner": N_STR,
            "start_received_at": N_TIME,
            "stop_received_at": N_TIME,
            "updated_at": N_TIME,
        }
    ),
)

METER_VALUE = add_component(
    "MeterValue",
    obj(
        {
            "timestamp": N_TIME,
            "timestamp_original": N_STR,
            "source": N_STR,
            "measurand": N_STR,
            "phase": N_STR,
            "unit": N_STR,
            "context": N_STR,
            "location": N_STR,
            "format": N_STR,
            "value": N_STR,
            "normalised_value": nullable(NUM),
            "normalised_unit": N_STR,
        }
    ),
)

TRANSACTION_WITH_METER = add_component(
    "TransactionWithMeterValues",
    {
        "allOf": [
            TRANSACTION,
            obj(
                {
                    "meter_values": array(METER_VALUE),
                    "meter_values_total": INT,
                    "meter_values_limit": INT,
                    "meter_values_offset": INT,
                }
            ),
        ]
    },
)

UNKNOWN_STATION = obj(
    {
        "charge_point_id": STR,
        "first_seen_at": N_TIME,
        "last_seen_at": N_TIME,
        "attempts": INT,
        "last_remote_address": N_STR,
    }
)

COMMAND = add_component(
    "CommandRecord",
    obj(
        {
            "id": INT,
            "station_id": STR,
            "action": STR,
            "request": ANY,
            "outcome": {
                "type": "string",
                "description": "pending, ok, offline, timeout, call_error or failed",
            },
            "response": ANY,
            "origin": STR,
            "sent_at": N_TIME,
            "finished_at": N_TIME,
        }
    ),
)

ANOMALY = obj(
    {
        "id": INT,
        "station_id": STR,
        "kind": STR,
        "transaction_id": N_INT,
        "detail": ANY,
        "received_at": N_TIME,
    }
)

COMMAND_ANSWER = add_component(
    "CommandAnswer",
    obj(
        {"status": {"const": "ok"}, "response": obj()},
        description="the station's answer (its payload as on the wire)",
    ),
)

RETIRE_BODY = obj(
    {"reason": nullable({"type": "string", "maxLength": 200}), "force": BOOL},
    optional=("reason", "force"),
    extra=False,
)

PROFILE_BODY = obj({"profile": {"type": "integer", "enum": [2, 3]}}, extra=False)
