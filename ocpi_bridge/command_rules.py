"""MOBI.E's command tables (seed 001, tables 16 to 22), as pure functions.

Each function takes the facts of one row's columns and returns the OCPI result and the
message MOBI.E specifies (``None`` when the table gives none). See
../shared/mobie-commands.md for the tables in readable form.
"""

from __future__ import annotations

from dataclasses import dataclass

WARNING_NO_ACK = "WARNING! Original ack not received."


@dataclass(frozen=True, slots=True)
class Decision:
    result: str
    message: str | None = None

    def display(self) -> list[dict[str, str]]:
        """The OCPI ``message``: a list of DisplayText (English, as MOBI.E wrote them)."""
        return [{"language": "en", "text": self.message}] if self.message else []


# ---------------------------------------------------------------------------- START_SESSION


def start_response(token_valid: bool, evse_exists: bool, station_online: bool) -> Decision:
    """Table 16. The EVSE's current status is not considered (the station may not have
    reported its latest changes yet)."""
    if not station_online:
        return Decision("REJECTED", "The requested charging station is currently offline.")
    if not token_valid:
        return Decision("REJECTED", "The requested token is invalid.")
    if not evse_exists:
        return Decision("REJECTED", "The requested EVSE UID does not exist in the location.")
    return Decision("ACCEPTED")


def start_result(
    conf: str | None,
    start_received: bool,
    timed_out: bool,
    user_active_on_evse: bool = False,
    other_active_on_evse: bool = False,
    evse_out_of_service: bool = False,
    start_remark: str | None = None,
) -> Decision | None:
    """Table 17. ``conf``: the RemoteStartTransaction.conf status, None while none came (or
    never will). Returns None while the outcome is not known yet. Never ACCEPTED before a
    StartTransaction.req."""
    if start_received:
        if conf is None:
            return Decision("ACCEPTED", WARNING_NO_ACK)
        return Decision("ACCEPTED", start_remark)
    if conf == "Accepted":
        if timed_out:
            return Decision(
                "FAILED", "The charging station has not confirmed that it started the transaction."
            )
        return None
    if conf is not None:  # Rejected (or a CallError): decided at once
        if user_active_on_evse and not other_active_on_evse:
            return Decision(
                "EVSE_OCCUPIED", "The current user has an active transaction on the EVSE."
            )
        if evse_out_of_service and not user_active_on_evse and not other_active_on_evse:
            return Decision("EVSE_INOPERATIVE", "The requested EVSE is out of service.")
        if other_active_on_evse and not user_active_on_evse:
            return Decision("EVSE_OCCUPIED", "The EVSE is currently occupied.")
        return Decision("REJECTED")
    if timed_out:
        return Decision("TIMEOUT")
    return None


# ---------------------------------------------------------------------------- STOP_SESSION


def stop_response(
    exists: bool, active: bool, owned: bool, station_online: bool, remote_capable: bool = True
) -> Decision:
    """Table 18 (and NOT_SUPPORTED when the station cannot stop remotely)."""
    if not exists:
        return Decision("UNKNOWN_SESSION")
    if not owned:
        return Decision("REJECTED", "The requested session is not owned by the requesting party.")
    if not active:
        return Decision("REJECTED", "The requested session is no longer active.")
    if not remote_capable:
        return Decision("NOT_SUPPORTED")
    if not station_online:
        return Decision("REJECTED", "The requested session is currently offline.")
    return Decision("ACCEPTED")


def stop_result(
    conf: str | None, stop_received: bool, stop_reason: str | None, timed_out: bool
) -> Decision | None:
    """Table 19. Returns None while the outcome is not known yet."""
    if stop_received:
        reason = stop_reason or "Local"  # OCPP's default reason
        if conf is None:
            return Decision("ACCEPTED", f"{WARNING_NO_ACK} {reason}")
        return Decision("ACCEPTED", None if reason == "Remote" else reason)
    if conf == "Accepted":
        if timed_out:
            return Decision(
                "FAILED", "The charging station has not confirmed that it stopped the transaction."
            )
        return None
    if conf is not None:
        return Decision("FAILED", "The charging station has rejected the request.")
    if timed_out:
        return Decision("TIMEOUT")
    return None


# ---------------------------------------------------------------------------- UNLOCK_CONNECTOR

OFFLINE_UNLOCK = "Impossible to perform the requested command as the charging station is offline."


def unlock_response(
    party_active_session: bool, party_ended_at: str | None, station_online: bool
) -> Decision:
    """Table 21. ``party_ended_at``: when the last session on the connector ended, if it was
    the party's and less than 24 h ago (as text for the message)."""
    if party_active_session:
        if station_online:
            return Decision("ACCEPTED")
        return Decision("REJECTED", OFFLINE_UNLOCK)
    if party_ended_at is not None:
        warning = f"Warning: the charging session had ended at {party_ended_at}"
        if station_online:
            return Decision("ACCEPTED", warning)
        return Decision("REJECTED", f"{OFFLINE_UNLOCK} {warning}")
    return Decision(
        "REJECTED", "There is no valid session owned by the EMSP on the charging station"
    )


def unlock_result(conf: str | None, timed_out: bool) -> Decision | None:
    """Table 22 (OCPP 1.6). A CallError counts as a failure."""
    if conf == "Unlocked":
        return Decision("ACCEPTED")
    if conf == "NotSupported":
        return Decision("NOT_SUPPORTED")
    if conf is not None:
        return Decision("FAILED")
    if timed_out:
        return Decision("TIMEOUT")
    return None
