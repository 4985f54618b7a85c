"""How a simulated station answers the central system: one object per station."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

_CHOICES: dict[str, tuple[str, ...]] = {
    "remote_start": ("accept", "reject", "ignore", "accept_no_tx", "accept_timeout", "lost_conf"),
    "remote_stop": ("accept", "reject", "ignore", "lost_conf"),
    "unlock": ("Unlocked", "UnlockFailed", "NotSupported", "ignore"),
    "reset": ("Accepted", "Rejected", "ignore"),
    "trigger": ("Accepted", "Rejected", "NotImplemented"),
    "data_transfer": ("UnknownVendorId", "UnknownMessageId", "Rejected", "Accepted"),
    "firmware_update": ("Installed", "DownloadFailed", "InstallationFailed"),
    "diagnostics_upload": ("Uploaded", "UploadFailed"),
}

_STOP_REASONS = (
    "EmergencyStop",
    "EVDisconnected",
    "HardReset",
    "Local",
    "Other",
    "PowerLoss",
    "Reboot",
    "Remote",
    "SoftReset",
    "UnlockCommand",
    "DeAuthorized",
)


@dataclass
class Behaviour:
    """Choices that decide how a :class:`~charger_sim.Station` reacts to the central system.

    Answers to central-system calls:

    ``remote_start``
        ``"accept"`` (default): answer Accepted when a usable connector exists (the requested
        one, else the first one in Preparing, else the first Available one; Rejected when there
        is none), then StatusNotification Preparing, Authorize (when the configuration key
        AuthorizeRemoteTxRequests is true), StartTransaction, StatusNotification Charging and
        periodic MeterValues.
        ``"reject"``: answer Rejected, do nothing.
        ``"ignore"``: never answer, do nothing.
        ``"accept_no_tx"``: answer Accepted, start nothing.
        ``"accept_timeout"``: answer Accepted, StatusNotification Preparing, then after
        ConnectionTimeOut seconds (no EV plugged in) Available, no transaction (TC_011_2).
        ``"lost_conf"``: do not send the answer (as if it was lost) but start the transaction.
    ``remote_stop``
        ``"accept"`` (default): Accepted for a known active transactionId (Rejected otherwise),
        then StopTransaction with reason ``remote_stop_reason``, StatusNotification Finishing,
        Available. ``"reject"``, ``"ignore"`` and ``"lost_conf"`` as for ``remote_start``.
    ``unlock``
        ``"Unlocked"`` (default; an active transaction on the connector ends with Finishing,
        StopTransaction reason UnlockCommand, Available), ``"UnlockFailed"``,
        ``"NotSupported"``, or ``"ignore"`` (no answer). A connectorId outside
        1..NumberOfConnectors is always answered NotSupported.
    ``reset``
        ``"Accepted"`` (stop transactions with reason SoftReset/HardReset, close the websocket,
        reconnect after ``reboot_delay``, boot, report every connector's status),
        ``"Rejected"`` or ``"ignore"``.
    ``trigger``
        TriggerMessage answer: ``"Accepted"`` (then the requested message is sent),
        ``"Rejected"``, ``"NotImplemented"``.
    ``data_transfer``
        Status answered to a DataTransfer from the central system (default UnknownVendorId),
        except the pricing extension's on a station with ``cost_display=True`` (see
        :mod:`charger_sim.costdisplay`).
    ``firmware_update`` / ``diagnostics_upload``
        Outcome of the simulated UpdateFirmware / GetDiagnostics processes. With
        ``"Installed"`` / ``"Uploaded"`` the file is really transferred over HTTP(S)
        (:mod:`charger_sim.transfers`); a transfer that fails gives DownloadFailed /
        UploadFailed.
    ``firmware_version_after``
        The version booted after an install whose image does not declare one (its first
        line ``simfw-version: <version>``); None: the version stays.

    Automatic behaviour:

    ``auto_heartbeat``
        Send Heartbeat every HeartbeatInterval seconds once booted.
    ``auto_meter_values``
        Send MeterValues every MeterValueSampleInterval seconds during a transaction.
    ``authorize_remote_tx``
        Initial value of the configuration key AuthorizeRemoteTxRequests (None: keep the
        station's default, true).
    ``heartbeat_interval``
        When set, use this heartbeat interval and ignore the one in BootNotification.conf.
    ``charge_power_w``
        Power the car wants while charging (a connector's ``wanted_w`` overrides it); it
        draws min(wanted, the charging profiles' limit) and the meter register grows by
        power × time.
    ``voltage`` / ``min_current_a`` / ``max_current_a``
        Smart charging (:mod:`charger_sim.smart`): the phase voltage that converts limits in
        A to W (W = A x voltage x phases), the car's minimum current (IEC 61851: 6 A; an
        offer below it suspends charging, StatusNotification SuspendedEVSE) and the
        station's rated current per phase (what GetCompositeSchedule reports where no
        profile limits).
    ``ramp_w_per_s``
        How fast the car's power rises towards min(``charge_power_w``, limit) during a
        transaction (0: at once). It drops at once when the limit falls (a car must follow a
        lower offer within seconds; at once, the meter never shows more than the limit). A
        transaction starts at its target power, as before profiles existed.
    ``keep_profiles``
        Keep the charging profiles across a hard reset or a firmware reboot (they are always
        kept across a soft reset; TxProfiles end with their transaction anyway). Off: a hard
        reboot loses them, as on chargers that keep profiles in RAM; csms re-applies them
        after the boot.
    ``auto_reconnect``
        Reconnect (with backoff from ``reconnect_delay`` up to 30 s) when the central system
        or the network closes the connection unexpectedly. Off by default so that tests see
        connection loss as it is.
    ``boot_on_reconnect``
        Send BootNotification (and report statuses) when reconnecting automatically.
    ``retry_transaction_messages``
        A transaction message answered with a CallError or not at all is sent again
        (``TransactionMessageAttempts`` times, ``TransactionMessageRetryInterval`` apart), as
        real chargers do, even while its caller waits. Off by default: a test then sees the
        CallError itself (queued messages are always retried).
    ``reboot_delay``
        Seconds between closing the websocket and reconnecting on Reset / firmware install.
    ``step_delay``
        Pause between the steps of the simulated firmware and diagnostics processes.
    ``boot_retries`` / ``max_boot_wait``
        When a boot must succeed (reset, reconnect, ``boot_and_report(retry=True)``):
        attempts while the answer is Pending/Rejected, and the cap in seconds on the
        wait between attempts (the central system's interval is used when it is shorter).
    """

    remote_start: str = "accept"
    remote_stop: str = "accept"
    remote_stop_reason: str = "Remote"
    unlock: str = "Unlocked"
    reset: str = "Accepted"
    trigger: str = "Accepted"
    data_transfer: str = "UnknownVendorId"
    firmware_update: str = "Installed"
    diagnostics_upload: str = "Uploaded"
    firmware_version_after: str | None = None
    auto_heartbeat: bool = True
    auto_meter_values: bool = True
    authorize_remote_tx: bool | None = None
    heartbeat_interval: int | None = None
    charge_power_w: float = 11000.0
    voltage: float = 230.0
    min_current_a: float = 6.0
    max_current_a: float = 32.0
    ramp_w_per_s: float = 2000.0
    keep_profiles: bool = False
    auto_reconnect: bool = False
    reconnect_delay: float = 1.0
    boot_on_reconnect: bool = True
    retry_transaction_messages: bool = False
    reboot_delay: float = 0.2
    step_delay: float = 0.1
    boot_retries: int = 5
    max_boot_wait: float = 30.0

    def __post_init__(self) -> None:
        for item in fields(self):
            allowed = _CHOICES.get(item.name)
            value = getattr(self, item.name)
            if allowed is not None and value not in allowed:
                raise ValueError(f"Behaviour.{item.name}={value!r}: expected one of {allowed}")
        if self.remote_stop_reason not in _STOP_REASONS:
            raise ValueError(f"Behaviour.remote_stop_reason={self.remote_stop_reason!r}")
        if self.charge_power_w < 0:
            raise ValueError("Behaviour.charge_power_w must not be negative")
        for name in ("voltage", "max_current_a"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"Behaviour.{name}={value!r}: must be a finite number > 0")
        for name in ("min_current_a", "ramp_w_per_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"Behaviour.{name}={value!r}: must be a finite number >= 0")
