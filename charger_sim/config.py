"""The station's OCPP 1.6 configuration keys (section 9 of the specification)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CORE_KEYS = (
    "AuthorizeRemoteTxRequests",
    "ClockAlignedDataInterval",
    "ConnectionTimeOut",
    "ConnectorPhaseRotation",
    "GetConfigurationMaxKeys",
    "HeartbeatInterval",
    "LocalAuthorizeOffline",
    "LocalPreAuthorize",
    "MeterValuesAlignedData",
    "MeterValuesSampledData",
    "MeterValueSampleInterval",
    "NumberOfConnectors",
    "ResetRetries",
    "StopTransactionOnEVSideDisconnect",
    "StopTransactionOnInvalidId",
    "StopTxnAlignedData",
    "StopTxnSampledData",
    "SupportedFeatureProfiles",
    "TransactionMessageAttempts",
    "TransactionMessageRetryInterval",
    "UnlockConnectorOnEVSideDisconnect",
)

MEASURANDS = frozenset(
    {
        "Energy.Active.Export.Register",
        "Energy.Active.Import.Register",
        "Energy.Reactive.Export.Register",
        "Energy.Reactive.Import.Register",
        "Energy.Active.Export.Interval",
        "Energy.Active.Import.Interval",
        "Energy.Reactive.Export.Interval",
        "Energy.Reactive.Import.Interval",
        "Power.Active.Export",
        "Power.Active.Import",
        "Power.Offered",
        "Power.Reactive.Export",
        "Power.Reactive.Import",
        "Power.Factor",
        "Current.Import",
        "Current.Export",
        "Current.Offered",
        "Voltage",
        "Frequency",
        "Temperature",
        "SoC",
        "RPM",
    }
)

FEATURE_PROFILES = (
    "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger"
)


@dataclass
class ConfigKey:
    """One configuration key: its value as text, whether it is read-only, and its kind.

    ``kind`` is one of ``int`` (non-negative integer), ``bool`` (true/false), ``measurands``
    (comma-separated measurands), ``text``.
    """

    name: str
    value: str
    readonly: bool = False
    kind: str = "text"


def _defaults(connectors: int) -> list[ConfigKey]:
    rotation = ",".join(f"{n}.RST" for n in range(connectors + 1))
    return [
        # Core profile
        ConfigKey("AuthorizeRemoteTxRequests", "true", False, "bool"),
        ConfigKey("ClockAlignedDataInterval", "0", False, "int"),
        ConfigKey("ConnectionTimeOut", "60", False, "int"),
        ConfigKey("ConnectorPhaseRotation", rotation, False, "text"),
        ConfigKey("GetConfigurationMaxKeys", "50", True, "int"),
        ConfigKey("HeartbeatInterval", "300", False, "int"),
        ConfigKey("LocalAuthorizeOffline", "true", False, "bool"),
        ConfigKey("LocalPreAuthorize", "false", False, "bool"),
        ConfigKey("MeterValuesAlignedData", "Energy.Active.Import.Register", False, "measurands"),
        ConfigKey(
            "MeterValuesSampledData",
            "Energy.Active.Import.Register,Power.Active.Import",
            False,
            "measurands",
        ),
        ConfigKey("MeterValueSampleInterval", "60", False, "int"),
        ConfigKey("NumberOfConnectors", str(connectors), True, "int"),
        ConfigKey("ResetRetries", "3", False, "int"),
        ConfigKey("StopTransactionOnEVSideDisconnect", "true", False, "bool"),
        ConfigKey("StopTransactionOnInvalidId", "true", False, "bool"),
        ConfigKey("StopTxnAlignedData", "", False, "measurands"),
        ConfigKey("StopTxnSampledData", "", False, "measurands"),
        ConfigKey("SupportedFeatureProfiles", FEATURE_PROFILES, True, "text"),
        ConfigKey("TransactionMessageAttempts", "3", False, "int"),
        ConfigKey("TransactionMessageRetryInterval", "10", False, "int"),
        ConfigKey("UnlockConnectorOnEVSideDisconnect", "true", False, "bool"),
        # Optional Core keys
        ConfigKey("MeterValuesSampledDataMaxLength", "8", True, "int"),
        ConfigKey("WebSocketPingInterval", "0", False, "int"),
        # Local auth list management profile
        ConfigKey("LocalAuthListEnabled", "true", False, "bool"),
        ConfigKey("LocalAuthListMaxLength", "100", True, "int"),
        # (optional Core key; true keeps starts offline with any tag, as before)
        ConfigKey("AllowOfflineTxForUnknownId", "true", False, "bool"),
        ConfigKey("SendLocalListMaxLength", "100", True, "int"),
        # Reservation profile
        ConfigKey("ReserveConnectorZeroSupported", "false", True, "bool"),
        # Smart charging profile
        ConfigKey("ChargeProfileMaxStackLevel", "10", True, "int"),
        ConfigKey("ChargingScheduleAllowedChargingRateUnit", "Current,Power", True, "text"),
        ConfigKey("ChargingScheduleMaxPeriods", "24", True, "int"),
        ConfigKey("MaxChargingProfilesInstalled", "10", True, "int"),
    ]


class ConfigurationStore:
    """Configuration keys with OCPP's ChangeConfiguration/GetConfiguration semantics.

    ``overrides`` sets initial values (unknown names are added as read-write text keys).
    """

    def __init__(self, connectors: int, overrides: Mapping[str, str] | None = None):
        self._keys: dict[str, ConfigKey] = {key.name: key for key in _defaults(connectors)}
        for name, value in (overrides or {}).items():
            self.set(name, value)

    def __contains__(self, name: object) -> bool:
        return name in self._keys

    def names(self) -> list[str]:
        return list(self._keys)

    def get(self, name: str) -> str | None:
        key = self._keys.get(name)
        return None if key is None else key.value

    def get_int(self, name: str, default: int = 0) -> int:
        try:
            return int(self.get(name) or "")
        except ValueError:
            return default

    def get_bool(self, name: str, default: bool = False) -> bool:
        value = (self.get(name) or "").strip().lower()
        if value in ("true", "false"):
            return value == "true"
        return default

    def set(self, name: str, value: str | int | bool, *, readonly: bool | None = None) -> None:
        """Set a key locally, bypassing the checks (for tests and start-up settings)."""
        text = _as_text(value)
        key = self._keys.get(name)
        if key is None:
            self._keys[name] = ConfigKey(name, text, bool(readonly), "text")
            return
        key.value = text
        if readonly is not None:
            key.readonly = readonly

    def change(self, name: str, value: str) -> str:
        """Apply a ChangeConfiguration.req; return its status.

        Unknown key: NotSupported; read-only key or invalid value: Rejected; else Accepted.
        """
        key = self._keys.get(name)
        if key is None:
            return "NotSupported"
        if key.readonly:
            return "Rejected"
        normalised = _validate(key.kind, value)
        if normalised is None:
            return "Rejected"
        key.value = normalised
        return "Accepted"

    def report(self, names: Iterable[str] | None) -> tuple[list[dict], list[str]]:
        """GetConfiguration: (configurationKey entries, unknownKey names)."""
        if not names:
            return [self._entry(key) for key in self._keys.values()], []
        known: list[dict] = []
        unknown: list[str] = []
        for name in names:
            key = self._keys.get(name)
            if key is None:
                unknown.append(name)
            else:
                known.append(self._entry(key))
        return known, unknown

    @staticmethod
    def _entry(key: ConfigKey) -> dict:
        return {"key": key.name, "readonly": key.readonly, "value": key.value[:500]}


def _as_text(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _validate(kind: str, value: str) -> str | None:
    """Return the value to store, or None when it is invalid for the kind."""
    text = value.strip()
    if kind == "int":
        if not (text.isascii() and text.isdigit()):
            return None
        return str(int(text))
    if kind == "bool":
        lowered = text.lower()
        return lowered if lowered in ("true", "false") else None
    if kind == "measurands":
        items = [item.strip() for item in text.split(",") if item.strip()]
        if any(item not in MEASURANDS for item in items):
            return None
        return ",".join(items)
    return value
