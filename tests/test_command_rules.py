"""MOBI.E's command tables 16 to 22 (/work/shared/mobie-commands.md) against the pure
functions of ocpi_bridge/command_rules.py: every row, with every value a ``*`` allows."""

from __future__ import annotations

from itertools import product

import pytest

from ocpi_bridge import command_rules as rules
from ocpi_bridge.command_rules import Decision

BOOL = (False, True)
NO_ACK = "WARNING! Original ack not received."
UNLOCK_OFFLINE = "Impossible to perform the requested command as the charging station is offline."


def test_display_is_a_list_of_english_display_texts() -> None:
    assert Decision("ACCEPTED").display() == []
    assert Decision("REJECTED", "Why.").display() == [{"language": "en", "text": "Why."}]


# ---------------------------------------------------------------------------- table 16


def test_table16_row1_accepted() -> None:
    assert rules.start_response(True, True, True) == Decision("ACCEPTED")


@pytest.mark.parametrize(("token_valid", "evse_exists"), list(product(BOOL, BOOL)))
def test_table16_row2_offline_whatever_the_token_and_evse(
    token_valid: bool, evse_exists: bool
) -> None:
    assert rules.start_response(token_valid, evse_exists, False) == Decision(
        "REJECTED", "The requested charging station is currently offline."
    )


@pytest.mark.parametrize("evse_exists", BOOL)
def test_table16_row3_token_invalid_whatever_the_evse(evse_exists: bool) -> None:
    assert rules.start_response(False, evse_exists, True) == Decision(
        "REJECTED", "The requested token is invalid."
    )


def test_table16_row4_evse_not_in_the_location() -> None:
    assert rules.start_response(True, False, True) == Decision(
        "REJECTED", "The requested EVSE UID does not exist in the location."
    )


# ---------------------------------------------------------------------------- table 17

FACTS = list(product(BOOL, BOOL, BOOL))  # user active, other active, out of service


@pytest.mark.parametrize(("user", "other", "oos"), FACTS)
def test_table17_row1_accepted_with_conf_and_start(user: bool, other: bool, oos: bool) -> None:
    got = rules.start_result("Accepted", True, False, user, other, oos)
    assert got == Decision("ACCEPTED")
    remark = rules.start_result("Accepted", True, False, user, other, oos, start_remark="Hi")
    assert remark == Decision("ACCEPTED", "Hi")  # may carry the StartTransaction's remark


@pytest.mark.parametrize(("user", "other", "oos"), FACTS)
def test_table17_row2_start_without_conf_warns(user: bool, other: bool, oos: bool) -> None:
    assert rules.start_result(None, True, False, user, other, oos) == Decision("ACCEPTED", NO_ACK)


@pytest.mark.parametrize(("user", "other", "oos"), FACTS)
def test_table17_row3_accepted_no_start_fails_at_timeout(
    user: bool, other: bool, oos: bool
) -> None:
    assert rules.start_result("Accepted", False, True, user, other, oos) == Decision(
        "FAILED", "The charging station has not confirmed that it started the transaction."
    )
    # and before the timeout nothing is decided yet
    assert rules.start_result("Accepted", False, False, user, other, oos) is None


@pytest.mark.parametrize("oos", BOOL)
def test_table17_row4_rejected_user_active(oos: bool) -> None:
    assert rules.start_result("Rejected", False, False, True, False, oos) == Decision(
        "EVSE_OCCUPIED", "The current user has an active transaction on the EVSE."
    )


def test_table17_row5_rejected_out_of_service() -> None:
    assert rules.start_result("Rejected", False, False, False, False, True) == Decision(
        "EVSE_INOPERATIVE", "The requested EVSE is out of service."
    )


@pytest.mark.parametrize("oos", BOOL)
def test_table17_row6_rejected_other_user_active(oos: bool) -> None:
    assert rules.start_result("Rejected", False, False, False, True, oos) == Decision(
        "EVSE_OCCUPIED", "The EVSE is currently occupied."
    )


@pytest.mark.parametrize(("user", "other", "oos"), FACTS)
def test_table17_row7_no_conf_no_start_timeout(user: bool, other: bool, oos: bool) -> None:
    assert rules.start_result(None, False, True, user, other, oos) == Decision("TIMEOUT")
    assert rules.start_result(None, False, False, user, other, oos) is None


def test_table17_rejected_matching_no_row_is_rejected() -> None:
    # a free, working EVSE
    assert rules.start_result("Rejected", False, False, False, False, False) == Decision("REJECTED")
    # both the user and another user active on it: neither row 4 nor row 6
    for oos in BOOL:
        assert rules.start_result("Rejected", False, False, True, True, oos) == Decision("REJECTED")


def test_table17_a_call_error_refuses_like_rejected() -> None:
    got = rules.start_result("CallError:NotImplemented", False, False, False, True, False)
    assert got == Decision("EVSE_OCCUPIED", "The EVSE is currently occupied.")


@pytest.mark.parametrize(
    ("conf", "timed_out", "user", "other", "oos"),
    list(product((None, "Accepted", "Rejected"), BOOL, BOOL, BOOL, BOOL)),
)
def test_table17_never_accepted_before_start_transaction(
    conf: str | None, timed_out: bool, user: bool, other: bool, oos: bool
) -> None:
    got = rules.start_result(conf, False, timed_out, user, other, oos)
    assert got is None or got.result != "ACCEPTED"


# ---------------------------------------------------------------------------- table 18

NOT_OWNED = Decision("REJECTED", "The requested session is not owned by the requesting party.")


def test_table18_row1_accepted() -> None:
    assert rules.stop_response(True, True, True, True) == Decision("ACCEPTED")


def test_table18_row2_offline() -> None:
    assert rules.stop_response(True, True, True, False) == Decision(
        "REJECTED", "The requested session is currently offline."
    )


@pytest.mark.parametrize("online", BOOL)
def test_table18_row3_active_not_owned(online: bool) -> None:
    assert rules.stop_response(True, True, False, online) == NOT_OWNED


@pytest.mark.parametrize("online", BOOL)
def test_table18_row4_owned_no_longer_active(online: bool) -> None:
    assert rules.stop_response(True, False, True, online) == Decision(
        "REJECTED", "The requested session is no longer active."
    )


@pytest.mark.parametrize("online", BOOL)
def test_table18_row5_inactive_not_owned(online: bool) -> None:
    assert rules.stop_response(True, False, False, online) == NOT_OWNED


@pytest.mark.parametrize(("active", "owned", "online"), list(product(BOOL, BOOL, BOOL)))
def test_table18_row6_unknown_session(active: bool, owned: bool, online: bool) -> None:
    assert rules.stop_response(False, active, owned, online) == Decision("UNKNOWN_SESSION")


def test_stop_response_not_supported_when_the_station_cannot_stop_remotely() -> None:
    got = rules.stop_response(True, True, True, True, remote_capable=False)
    assert got == Decision("NOT_SUPPORTED")
    # a request it would refuse anyway is refused for its own reason
    assert rules.stop_response(True, True, False, True, remote_capable=False) == NOT_OWNED


# ---------------------------------------------------------------------------- table 19


def test_table19_row1_stopped_remotely() -> None:
    assert rules.stop_result("Accepted", True, "Remote", False) == Decision("ACCEPTED")


@pytest.mark.parametrize("reason", ["Local", "EVDisconnected", "UnlockCommand", "Other"])
def test_table19_row2_stopped_for_another_reason(reason: str) -> None:
    assert rules.stop_result("Accepted", True, reason, False) == Decision("ACCEPTED", reason)


def test_table19_row2_no_reason_is_ocpps_default_local() -> None:
    assert rules.stop_result("Accepted", True, None, False) == Decision("ACCEPTED", "Local")


@pytest.mark.parametrize("reason", ["Remote", "EVDisconnected"])
def test_table19_row3_stop_without_conf_warns_with_the_reason(reason: str) -> None:
    got = rules.stop_result(None, True, reason, False)
    assert got == Decision("ACCEPTED", f"{NO_ACK} {reason}")


def test_table19_row4_accepted_not_stopped_fails_at_timeout() -> None:
    assert rules.stop_result("Accepted", False, None, True) == Decision(
        "FAILED", "The charging station has not confirmed that it stopped the transaction."
    )
    assert rules.stop_result("Accepted", False, None, False) is None


@pytest.mark.parametrize("conf", ["Rejected", "CallError:InternalError"])
def test_table19_row5_rejected(conf: str) -> None:
    assert rules.stop_result(conf, False, None, False) == Decision(
        "FAILED", "The charging station has rejected the request."
    )


def test_table19_row6_no_conf_no_stop_timeout() -> None:
    assert rules.stop_result(None, False, None, True) == Decision("TIMEOUT")
    assert rules.stop_result(None, False, None, False) is None


# ---------------------------------------------------------------------------- table 21

ENDED = "2026-05-01T10:00:00Z"
WARNING = f"Warning: the charging session had ended at {ENDED}"


@pytest.mark.parametrize("ended", [None, ENDED])
def test_table21_row1_party_active_online(ended: str | None) -> None:
    assert rules.unlock_response(True, ended, True) == Decision("ACCEPTED")


@pytest.mark.parametrize("ended", [None, ENDED])
def test_table21_row2_party_active_offline(ended: str | None) -> None:
    assert rules.unlock_response(True, ended, False) == Decision("REJECTED", UNLOCK_OFFLINE)


def test_table21_row3_party_ended_recently_online() -> None:
    assert rules.unlock_response(False, ENDED, True) == Decision("ACCEPTED", WARNING)


def test_table21_row4_party_ended_recently_offline() -> None:
    assert rules.unlock_response(False, ENDED, False) == Decision(
        "REJECTED", f"{UNLOCK_OFFLINE} {WARNING}"
    )


@pytest.mark.parametrize("online", BOOL)
def test_table21_row5_no_session_of_the_party(online: bool) -> None:
    assert rules.unlock_response(False, None, online) == Decision(
        "REJECTED", "There is no valid session owned by the EMSP on the charging station"
    )


# ---------------------------------------------------------------------------- table 22


@pytest.mark.parametrize(
    ("conf", "result"),
    [("Unlocked", "ACCEPTED"), ("UnlockFailed", "FAILED"), ("NotSupported", "NOT_SUPPORTED")],
)
def test_table22_rows1_to_3_the_stations_answer(conf: str, result: str) -> None:
    assert rules.unlock_result(conf, False) == Decision(result)


def test_table22_row4_no_answer_timeout() -> None:
    assert rules.unlock_result(None, True) == Decision("TIMEOUT")
    assert rules.unlock_result(None, False) is None


def test_table22_a_call_error_fails() -> None:
    assert rules.unlock_result("CallError:NotImplemented", False) == Decision("FAILED")
