"""The fast payload validator may only save time: for every OCPP 1.6 schema, on valid
payloads and on many broken ones, check_payload must agree with the library's jsonschema
validator (accept what it accepts, refuse what it refuses, with its error)."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from csms import ocppj

BAD_VALUES: list[Any] = [None, True, 1.5, -1, 0, "", "x" * 600, [], {}, "2026-13-45", 10**20]


def instance(schema: dict[str, Any], rng: random.Random, full: bool) -> Any:
    """A valid instance of a (draft 4, OCPP 1.6) schema: required properties, and with
    ``full`` the optional ones too."""
    if "enum" in schema:
        return rng.choice(schema["enum"])
    t = schema.get("type")
    if t == "object":
        props = schema.get("properties", {})
        keys = [k for k in props if full or k in schema.get("required", [])]
        return {k: instance(props[k], rng, full) for k in keys}
    if t == "array":
        n = max(1, schema.get("minItems", 1))
        return [instance(schema.get("items", {}), rng, full) for _ in range(n)]
    if t == "integer":
        return rng.randint(0, 100)
    if t == "number":
        return float(rng.randint(0, 100))
    if t == "boolean":
        return rng.random() < 0.5
    if t == "string":
        if schema.get("format") == "date-time":
            return "2026-11-23T10:00:00.000Z"
        return "a" * min(5, schema.get("maxLength", 5))
    return "anything"


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


def mutants(valid: Any, rng: random.Random) -> list[Any]:
    out = []
    for path in paths(valid)[1:]:
        *parent_path, last = path
        for change in ("drop", "bad", "extra"):
            m = copy.deepcopy(valid)
            parent = m
            for p in parent_path:
                parent = parent[p]
            if change == "drop":
                if isinstance(parent, dict):
                    del parent[last]
                else:
                    parent.pop(last)
            elif change == "bad":
                parent[last] = rng.choice(BAD_VALUES)
            elif isinstance(parent[last], dict):
                parent[last]["unexpected"] = 1
            else:
                continue
            out.append(m)
    return out


def verdict(kind: int, action: str, payload: Any) -> str | None:
    try:
        ocppj.check_payload(kind, action, payload)
    except ocppj.OcppError as e:
        return f"{e.code}: {e.description}"
    return None


def library_verdict(kind: int, action: str, payload: Any) -> str | None:
    error = next(iter(ocppj._validator(kind, action).iter_errors(payload)), None)
    if error is None:
        return None
    e = ocppj._schema_error(error)
    return f"{e.code}: {e.description}"


CASES = [
    (kind, action)
    for action in sorted(ocppj.CP_ACTIONS | ocppj.CS_ACTIONS)
    for kind in (ocppj.CALL, ocppj.CALLRESULT)
    if (kind, action) not in ocppj._DECIMAL_SCHEMAS
]


@pytest.mark.parametrize(("kind", "action"), CASES)
def test_fast_validator_agrees_with_the_library(kind: int, action: str) -> None:
    rng = random.Random(f"{kind}{action}")
    schema = ocppj._validator(kind, action).schema
    checked = 0
    for full in (False, True):
        valid = instance(schema, rng, full)
        assert verdict(kind, action, valid) is None, (action, valid)
        for payload in [valid, *mutants(valid, rng)]:
            assert verdict(kind, action, payload) == library_verdict(kind, action, payload), (
                action,
                payload,
            )
            checked += 1
    assert checked >= 1


def test_a_badly_formatted_timestamp_is_still_accepted_as_before() -> None:
    # the fast validator is not asked to check formats; the library never did
    payload = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
    payload["timestamp"] = "2026-11-23 10:00:00"
    assert verdict(ocppj.CALL, "StatusNotification", payload) is None
