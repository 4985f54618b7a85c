"""MOBI.E configuration of each station, rules R3 and R4.

After every accepted boot (once the BootNotification answer is sent), set
``HeartbeatInterval`` and ``MeterValueSampleInterval`` with ChangeConfiguration, read the
whole configuration back with GetConfiguration, store that snapshot, and mark the station
compliant or not, with the reasons. The judgement is a pure function of what the station
answered, :func:`evaluate`.
"""

from __future__ import annotations

from typing import Any

import structlog

from .commands import CommandError, CommandPort
from .config import MOBIE_HEARTBEAT_INTERVAL, MOBIE_MAX_METER_VALUE_SAMPLE_INTERVAL
from .connection import StationConnection
from .handlers import Services

log = structlog.get_logger("csms.provisioning")

HEARTBEAT = "HeartbeatInterval"
METER_INTERVAL = "MeterValueSampleInterval"


def evaluate(
    wanted: dict[str, int],
    change_answers: dict[str, str],
    snapshot: list[dict[str, Any]] | None,
    mobie_mode: bool = True,
) -> tuple[bool, list[str]]:
    """Judge a station's configuration.

    ``change_answers`` maps each key to the ChangeConfiguration status, or to an error text
    when the request failed; ``snapshot`` is GetConfiguration's ``configurationKey`` list, or
    None when it could not be read.
    """
    reasons: list[str] = []
    for key, value in wanted.items():
        answer = change_answers.get(key)
        if answer != "Accepted":
            reasons.append(f"ChangeConfiguration {key}={value} answered {answer}")
    if snapshot is None:
        reasons.append("GetConfiguration failed: configuration could not be read back")
        return False, reasons
    actual = {k.get("key"): k.get("value") for k in snapshot if isinstance(k, dict)}
    for key, value in wanted.items():
        if key not in actual:
            reasons.append(f"{key} is not reported by GetConfiguration")
            continue
        try:
            read = int(float(str(actual[key]).strip()))
        except ValueError:
            reasons.append(f"{key} reads back {actual[key]!r}, not a number")
            continue
        if read != value:
            reasons.append(f"{key} reads back {read}, expected {value}")
        if mobie_mode and key == HEARTBEAT and read > MOBIE_HEARTBEAT_INTERVAL:
            reasons.append(f"{key} {read} s breaks MOBI.E rule R4 ({MOBIE_HEARTBEAT_INTERVAL} s)")
        if (
            mobie_mode
            and key == METER_INTERVAL
            and (read <= 0 or read > MOBIE_MAX_METER_VALUE_SAMPLE_INTERVAL)
        ):
            reasons.append(
                f"{key} {read} s breaks MOBI.E rule R3 "
                f"(at most {MOBIE_MAX_METER_VALUE_SAMPLE_INTERVAL} s)"
            )
    # a reason may be found twice (answer and read-back): keep the first of each
    return not reasons, list(dict.fromkeys(reasons))


async def provision(conn: StationConnection, services: Services, commands: CommandPort) -> None:
    settings = services.settings
    wanted = {
        HEARTBEAT: settings.ocpp.heartbeat_interval,
        METER_INTERVAL: settings.ocpp.meter_value_sample_interval,
    }
    answers: dict[str, str] = {}
    for key, value in wanted.items():
        try:
            answer = await commands.send(
                conn.station_id,
                "ChangeConfiguration",
                {"key": key, "value": str(value)},
                origin="provisioning",
            )
            answers[key] = str(answer.get("status")) if isinstance(answer, dict) else "invalid"
        except CommandError as e:
            answers[key] = f"no usable answer ({e})"
    snapshot: list[dict[str, Any]] | None
    try:
        answer = await commands.send(conn.station_id, "GetConfiguration", {}, origin="provisioning")
        snapshot = answer.get("configurationKey", []) if isinstance(answer, dict) else None
    except CommandError as e:
        log.warning("configuration read-back failed", error=str(e))
        snapshot = None
    compliant, reasons = evaluate(wanted, answers, snapshot, settings.mobie_mode)
    await services.store.stations.save_configuration_check(
        conn.station_id, compliant, reasons, snapshot, services.clock.now()
    )
    if compliant:
        log.info("station configuration compliant", wanted=wanted)
    else:
        log.warning("station configuration NOT compliant", reasons=reasons)
