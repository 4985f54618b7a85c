"""Sampled values as stored: every field kept, numbers normalised.

OCPP 1.6 SampledValue: value (string), context, format, measurand, phase, location, unit,
each optional but the value, with defaults that the specification gives. Energy registers
are normalised to Wh (varh for reactive), power to W (var), and decimal strings such as
`"746575.4"` or `"0.00"` are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

DEFAULT_MEASURAND = "Energy.Active.Import.Register"
DEFAULT_CONTEXT = "Sample.Periodic"
DEFAULT_LOCATION = "Outlet"
DEFAULT_FORMAT = "Raw"

ENERGY_IMPORT_REGISTER = "Energy.Active.Import.Register"
POWER_IMPORT = "Power.Active.Import"

# unit -> (normalised unit, factor)
_UNITS: dict[str, tuple[str, float]] = {
    "Wh": ("Wh", 1.0),
    "kWh": ("Wh", 1000.0),
    "varh": ("varh", 1.0),
    "kvarh": ("varh", 1000.0),
    "W": ("W", 1.0),
    "kW": ("W", 1000.0),
    "VA": ("VA", 1.0),
    "kVA": ("VA", 1000.0),
    "var": ("var", 1.0),
    "kvar": ("var", 1000.0),
    "A": ("A", 1.0),
    "V": ("V", 1.0),
    "K": ("K", 1.0),
    "Celcius": ("Celsius", 1.0),  # the 1.6 schema's spelling
    "Celsius": ("Celsius", 1.0),
    "Fahrenheit": ("Fahrenheit", 1.0),
    "Percent": ("Percent", 1.0),
}


def default_unit(measurand: str) -> str:
    """The unit OCPP 1.6 implies when a sampled value has none."""
    if measurand.startswith("Energy.Reactive"):
        return "varh"
    if measurand.startswith("Energy"):
        return "Wh"
    if measurand.startswith("Power.Reactive"):
        return "var"
    if measurand.startswith("Power.Factor"):
        return ""
    if measurand.startswith("Power"):
        return "W"
    if measurand.startswith("Current"):
        return "A"
    if measurand == "Voltage":
        return "V"
    if measurand == "SoC":
        return "Percent"
    if measurand == "Temperature":
        return "Celsius"
    if measurand == "Frequency":
        return ""
    return ""


@dataclass(frozen=True, slots=True)
class Sample:
    """One sampled value of one meter value, with its normalised number when it has one."""

    measurand: str
    value_raw: str
    value: float | None  # in ``norm_unit``; None for SignedData or non-numbers
    unit: str | None  # as sent (None when absent)
    norm_unit: str
    phase: str | None
    context: str
    location: str
    format: str


def normalise(sampled_value: dict[str, Any]) -> Sample:
    measurand = sampled_value.get("measurand") or DEFAULT_MEASURAND
    raw = str(sampled_value.get("value", ""))
    fmt = sampled_value.get("format") or DEFAULT_FORMAT
    unit = sampled_value.get("unit")
    effective_unit = unit or default_unit(measurand)
    norm_unit, factor = _UNITS.get(effective_unit, (effective_unit, 1.0))
    number: float | None = None
    if fmt == "Raw":
        try:
            number = float(Decimal(raw.strip())) * factor
        except (InvalidOperation, ValueError):
            number = None
    return Sample(
        measurand=measurand,
        value_raw=raw,
        value=number,
        unit=unit,
        norm_unit=norm_unit,
        phase=sampled_value.get("phase"),
        context=sampled_value.get("context") or DEFAULT_CONTEXT,
        location=sampled_value.get("location") or DEFAULT_LOCATION,
        format=fmt,
    )


def energy_register_wh(samples: list[Sample] | tuple[Sample, ...]) -> float | None:
    """The imported-energy register of one meter value, in Wh (the total, not a phase)."""
    for s in samples:
        if s.measurand == ENERGY_IMPORT_REGISTER and s.phase is None and s.value is not None:
            return s.value
    for s in samples:
        if s.measurand == ENERGY_IMPORT_REGISTER and s.value is not None:
            return s.value
    return None


def power_w(samples: list[Sample] | tuple[Sample, ...]) -> float | None:
    """The imported active power of one meter value in W: the total, or the sum of phases."""
    phases = []
    for s in samples:
        if s.measurand == POWER_IMPORT and s.value is not None:
            if s.phase is None:
                return s.value
            if s.phase in ("L1", "L2", "L3", "L1-N", "L2-N", "L3-N"):
                phases.append(s.value)
    return sum(phases) if phases else None
