from csms.provisioning import evaluate

WANT = {"HeartbeatInterval": 120, "MeterValueSampleInterval": 60}
ACCEPTED = {"HeartbeatInterval": "Accepted", "MeterValueSampleInterval": "Accepted"}


def snap(hb: str = "120", mv: str = "60") -> list[dict[str, object]]:
    return [
        {"key": "HeartbeatInterval", "readonly": False, "value": hb},
        {"key": "MeterValueSampleInterval", "readonly": False, "value": mv},
    ]


def test_compliant() -> None:
    assert evaluate(WANT, ACCEPTED, snap()) == (True, [])


def test_refused_change_is_non_compliant_with_the_reason() -> None:
    ok, reasons = evaluate(WANT, {**ACCEPTED, "MeterValueSampleInterval": "Rejected"}, snap())
    assert not ok and reasons == [
        "ChangeConfiguration MeterValueSampleInterval=60 answered Rejected"
    ]


def test_read_back_that_disagrees() -> None:
    ok, reasons = evaluate(WANT, ACCEPTED, snap(mv="900"))
    assert not ok
    assert "MeterValueSampleInterval reads back 900, expected 60" in reasons
    assert any("R3" in r for r in reasons)


def test_missing_key_and_unreadable_configuration() -> None:
    ok, reasons = evaluate(WANT, ACCEPTED, snap()[:1])
    assert not ok and reasons == ["MeterValueSampleInterval is not reported by GetConfiguration"]
    ok, reasons = evaluate(WANT, {"HeartbeatInterval": "no usable answer (timeout)"}, None)
    assert not ok and len(reasons) == 3


def test_values_with_decimals_or_spaces_are_read() -> None:
    assert evaluate(WANT, ACCEPTED, snap(hb=" 120 ", mv="60.0"))[0]
