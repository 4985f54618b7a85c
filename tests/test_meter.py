from csms.meter import energy_register_wh, normalise, power_w


def test_defaults_of_ocpp_16() -> None:
    s = normalise({"value": "1234"})
    assert s.measurand == "Energy.Active.Import.Register"
    assert s.unit is None and s.norm_unit == "Wh" and s.value == 1234.0
    assert (s.context, s.location, s.format) == ("Sample.Periodic", "Outlet", "Raw")


def test_units_are_normalised_and_decimal_strings_accepted() -> None:
    assert normalise({"value": "3.5", "measurand": "Power.Active.Import", "unit": "kW"}).value == (
        3500.0
    )
    assert normalise({"value": "746575.4", "unit": "Wh"}).value == 746575.4
    assert normalise({"value": "12.345", "unit": "kWh"}).value == 12345.0
    assert normalise({"value": "0.00", "unit": "Wh"}).value == 0.0
    assert normalise(
        {"value": " 7 ", "measurand": "Energy.Reactive.Import.Register"}
    ).norm_unit == ("varh")


def test_everything_is_kept() -> None:
    s = normalise(
        {
            "value": "230.1",
            "measurand": "Voltage",
            "phase": "L1",
            "unit": "V",
            "context": "Transaction.Begin",
            "location": "Inlet",
            "format": "Raw",
        }
    )
    assert (s.measurand, s.phase, s.unit, s.context, s.location) == (
        "Voltage",
        "L1",
        "V",
        "Transaction.Begin",
        "Inlet",
    )


def test_signed_data_and_garbage_have_no_number_but_are_kept() -> None:
    s = normalise({"value": "ABCDEF==", "format": "SignedData"})
    assert s.value is None and s.value_raw == "ABCDEF=="
    assert normalise({"value": "n/a"}).value is None


def test_register_and_power_helpers() -> None:
    samples = [
        normalise({"value": "100", "measurand": "Energy.Active.Import.Register", "phase": "L1"}),
        normalise({"value": "300", "measurand": "Energy.Active.Import.Register"}),
        normalise({"value": "1", "measurand": "Power.Active.Import", "unit": "kW", "phase": "L1"}),
        normalise({"value": "2", "measurand": "Power.Active.Import", "unit": "kW", "phase": "L2"}),
    ]
    assert energy_register_wh(samples) == 300.0
    assert power_w(samples) == 3000.0
    assert energy_register_wh([]) is None and power_w([]) is None
