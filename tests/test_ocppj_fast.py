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


def instance(
    schema: dict[str, Any], rng: random.Random, full: bool, root: dict[str, Any] | None = None
) -> Any:
    """A valid instance of a (draft 4, OCPP 1.6) schema: required properties, and with
    ``full`` the optional ones too. (``$ref``s, in the security extension's schemas, point
    into the root's definitions.)"""
    root = root if root is not None else schema
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    t = schema.get("type")
    if t == "object":
        props = schema.get("properties", {})
        keys = [k for k in props if full or k in schema.get("required", [])]
        return {k: instance(props[k], rng, full, root) for k in keys}
    if t == "array":
        n = max(1, schema.get("minItems", 1))
        return [instance(schema.get("items", {}), rng, full, root) for _ in range(n)]
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


# ---------------------------------------------------------------------- framing (issue 12)


@pytest.mark.parametrize("kind", ["2.0", '"2"', "true", "2e0", "[2]", "null", "9", "-2"])
def test_message_type_must_be_exactly_2_3_or_4(kind: str) -> None:
    """Item 22: ``2.0`` (and ``true``, ``"2"``...) is not a CALL; with a readable id it is
    answered with a FormationViolation."""
    with pytest.raises(ocppj.FrameError) as e:
        ocppj.parse_frame(f'[{kind},"id1","Heartbeat",{{}}]')
    assert e.value.unique_id == "id1" and e.value.error.code == "FormationViolation"


def test_answers_are_never_answered() -> None:
    """A malformed CallResult or CallError is not answered; ``3.0`` is not a CallResult."""
    for text, answer_with in (('[3,"id1"]', None), ('[4,"id1"]', None), ('[3.0,"id1",{}]', "id1")):
        with pytest.raises(ocppj.FrameError) as e:
            ocppj.parse_frame(text)
        assert e.value.unique_id == answer_with, text


@pytest.mark.parametrize(
    "text",
    [
        '[2,"n1","DataTransfer",{"vendorId":"v","data":NaN}]',
        '[2,"n1","DataTransfer",{"vendorId":"v","data":-Infinity}]',
        '[2,"n1","Heartbeat",{"x":1e400}]',
        '[2,"n1","Heartbeat",{"x":' + "1" * 5000 + "}]",
        '[2,"n1","Heartbeat",' + "[" * 100_000 + "]" * 100_000 + "]",
        '[2,"n1","Heartbeat",' + '{"a":' * 33 + "1" + "}" * 33 + "]",
    ],
)
def test_what_is_not_json_or_too_deep_is_a_formation_violation(text: str) -> None:
    """Items 8 and 14: NaN/Infinity, numbers beyond a double or Python's digit limit,
    nesting (RecursionError, or just deeper than OCPP ever goes)."""
    with pytest.raises(ocppj.FrameError) as e:
        ocppj.parse_frame(text)
    assert e.value.unique_id == "n1" and e.value.error.code == "FormationViolation"


def test_nesting_within_the_limit_is_parsed() -> None:
    depth = ocppj.MAX_DEPTH - 2  # the frame and the payload are two levels
    frame = ocppj.parse_frame('[2,"d","Heartbeat",' + '{"a":' * depth + "{}" + "}" * depth + "]")
    assert isinstance(frame, ocppj.Call)


def test_lone_surrogates_are_replaced_and_noted_pairs_kept() -> None:
    frame = ocppj.parse_frame(
        r'[2,"a\ud800","Authorize",{"idTag":"x\udc00","ok":"\ud83d\ude00","\udbff":[1,"\ud800"]}]'
    )
    assert isinstance(frame, ocppj.Call)
    assert frame.unique_id == "a\ud800"  # the answer must carry it back as sent
    assert frame.payload == {"idTag": "x\ufffd", "ok": "\U0001f600", "\ufffd": [1, "\ufffd"]}
    assert sorted(frame.invalid_unicode) == ["idTag", "\ufffd", "\ufffd/1"]
    answer = ocppj.result_frame(frame.unique_id, {})
    answer.encode("utf-8")  # sendable
    assert answer == '[3,"a\\ud800",{}]'


def test_integers_beyond_64_bits_are_clamped_and_noted() -> None:
    frame = ocppj.parse_frame(
        '[2,"b","MeterValues",{"connectorId":9223372036854775808,"transactionId":-'
        + "9" * 30
        + ',"meterValue":[{"timestamp":"t","sampledValue":[{"value":"1"}]}],'
        '"x":[9223372036854775807]}]'
    )
    assert isinstance(frame, ocppj.Call)
    assert frame.payload["connectorId"] == ocppj.INT64_MAX
    assert frame.payload["transactionId"] == ocppj.INT64_MIN
    assert frame.payload["x"] == [ocppj.INT64_MAX]
    assert dict(frame.out_of_range) == {
        "connectorId": str(2**63),
        "transactionId": "-" + "9" * 30,
    }
