"""The pure core of real-time authorization (ocpi_bridge.realtime_auth): which tokens are
asked, what an eMSP's answer means, hostile answers, the LocationReferences sent, the cache."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ocpi_bridge.peers import PeerPolicy
from ocpi_bridge.realtime_auth import (
    Answer,
    AnswerCache,
    askable,
    decide,
    location_references,
    needs_asking,
    parse_reply,
    tokens_url,
    whitelist_only,
)
from ocpi_bridge.store import Peer

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def token(**extra: Any) -> dict[str, Any]:
    return {
        "country_code": "pt",
        "party_id": "ems",
        "uid": "CARD1",
        "type": "RFID",
        "contract_id": "PT-EMS-C-1",
        "issuer": "eMSP",
        "valid": True,
        "whitelist": "ALWAYS",
        "group_id": "GROUP1",
        "last_updated": "2026-01-01T00:00:00Z",
        **extra,
    }


def answer(allowed: str, peer_id: int = 1, **extra: Any) -> Answer:
    return Answer(peer_id, "answer", allowed=allowed, owner="PT/EMS", **extra)


def failed(peer_id: int = 1) -> Answer:
    return Answer(peer_id, "failed", error="timeout")


def unknown(peer_id: int = 1) -> Answer:
    return Answer(peer_id, "unknown")


# ---------------------------------------------------------------------------- which tokens


@pytest.mark.parametrize(
    ("whitelist", "valid", "asked"),
    [
        ("ALWAYS", True, False),
        ("ALWAYS", False, False),
        ("ALLOWED", True, True),
        ("ALLOWED", False, False),  # not valid: Blocked from the cache
        ("ALLOWED_OFFLINE", True, True),
        ("ALLOWED_OFFLINE", False, False),
        ("NEVER", True, True),
        ("NEVER", False, True),  # "always real-time, even if cached valid = false"
    ],
)
def test_which_tokens_are_asked(whitelist: str, valid: bool, asked: bool) -> None:
    assert needs_asking(token(whitelist=whitelist, valid=valid)) is asked


def test_a_card_no_token_matches_is_asked() -> None:
    assert needs_asking(None) is True


@pytest.mark.parametrize(
    ("whitelist", "valid", "status"),
    [
        ("ALWAYS", True, "Accepted"),
        ("ALLOWED", True, "Accepted"),
        ("ALLOWED_OFFLINE", True, "Invalid"),
        ("NEVER", True, "Invalid"),
        ("ALWAYS", False, "Blocked"),
        ("NEVER", False, "Blocked"),
    ],
)
def test_whitelist_only_is_the_behaviour_before_real_time(
    whitelist: str, valid: bool, status: str
) -> None:
    verdict = whitelist_only(token(whitelist=whitelist, valid=valid))
    assert verdict.status == status
    assert verdict.owner == "PT/EMS" and verdict.parent_id_tag == "GROUP1"
    # the same when nobody was asked (MOBI.E, realtime_auth off), whatever answers exist
    assert decide(token(whitelist=whitelist, valid=valid), [answer("ALLOWED")], None, False) == (
        verdict
    )


# ---------------------------------------------------------------------------- a pushed token


@pytest.mark.parametrize(
    ("allowed", "status"),
    [
        ("ALLOWED", "Accepted"),
        ("BLOCKED", "Blocked"),
        ("EXPIRED", "Expired"),
        ("NO_CREDIT", "Invalid"),
        ("NOT_ALLOWED", "Invalid"),
    ],
)
@pytest.mark.parametrize("whitelist", ["ALLOWED", "ALLOWED_OFFLINE", "NEVER"])
def test_the_emsps_answer_decides_for_its_token(whitelist: str, allowed: str, status: str) -> None:
    verdict = decide(
        token(whitelist=whitelist),
        [answer(allowed, authorization_reference="REF-1")],
        "LOC1",
    )
    assert verdict is not None and verdict.status == status
    assert verdict.owner == "PT/EMS"  # the token's owner, whoever answered
    assert verdict.authorization_reference == "REF-1"
    assert verdict.peer_id == 1


def test_never_token_not_valid_allowed_by_the_emsp() -> None:
    verdict = decide(token(whitelist="NEVER", valid=False), [answer("ALLOWED")], "LOC1")
    assert verdict is not None and verdict.status == "Accepted"


@pytest.mark.parametrize(
    ("whitelist", "valid", "status"),
    [
        ("ALLOWED", True, "Accepted"),  # the CPO may use its cache
        ("ALLOWED_OFFLINE", True, "Accepted"),  # allowed when the eMSP is unreachable
        ("NEVER", True, "Invalid"),  # refused when the eMSP is unreachable
        ("NEVER", False, "Blocked"),
    ],
)
@pytest.mark.parametrize("answers", [[], [failed()]], ids=["no-answer", "failed"])
def test_unreachable_emsp(whitelist: str, valid: bool, status: str, answers: list[Answer]) -> None:
    verdict = decide(token(whitelist=whitelist, valid=valid), answers, "LOC1")
    assert verdict is not None and verdict.status == status
    assert verdict.peer_id is None and verdict.owner == "PT/EMS"


@pytest.mark.parametrize("whitelist", ["ALLOWED", "ALLOWED_OFFLINE", "NEVER"])
def test_a_token_its_emsp_does_not_know_is_refused(whitelist: str) -> None:
    verdict = decide(token(whitelist=whitelist), [unknown()], "LOC1")
    assert verdict is not None and verdict.status == "Invalid"


def test_allowed_only_at_another_location_is_not_allowed_here() -> None:
    elsewhere = answer("ALLOWED", location_id="OTHER-LOC")
    verdict = decide(token(whitelist="NEVER"), [elsewhere], "LOC1")
    assert verdict is not None and verdict.status == "Invalid"
    here = answer("ALLOWED", location_id="loc1")  # CiString: any case
    verdict = decide(token(whitelist="NEVER"), [here], "LOC1")
    assert verdict is not None and verdict.status == "Accepted"


# ---------------------------------------------------------------------------- an unknown card


def test_first_allowed_wins_with_its_owner() -> None:
    answers = [
        Answer(1, "failed", error="HTTP 500"),
        Answer(2, "answer", allowed="NOT_ALLOWED", owner="PT/AAA"),
        Answer(3, "answer", allowed="ALLOWED", owner="PT/BBB", authorization_reference="R3"),
        Answer(4, "answer", allowed="ALLOWED", owner="PT/CCC"),
    ]
    verdict = decide(None, answers, "LOC1")
    assert verdict is not None
    assert (verdict.status, verdict.owner, verdict.peer_id) == ("Accepted", "PT/BBB", 3)
    assert verdict.authorization_reference == "R3"


def test_no_answer_leaves_it_to_csms() -> None:
    assert decide(None, [], "LOC1") is None
    assert decide(None, [failed(1), unknown(2)], "LOC1") is None


@pytest.mark.parametrize(
    ("alloweds", "status"),
    [
        (["NOT_ALLOWED", "BLOCKED"], "Blocked"),
        (["NO_CREDIT", "EXPIRED"], "Expired"),
        (["NOT_ALLOWED", "NO_CREDIT"], "Invalid"),
    ],
)
def test_refusals_without_an_allowed(alloweds: list[str], status: str) -> None:
    answers = [answer(a, peer_id=i) for i, a in enumerate(alloweds)]
    verdict = decide(None, answers, "LOC1")
    assert verdict is not None and verdict.status == status and verdict.owner is None


def test_unknown_card_allowed_elsewhere_is_refused_here() -> None:
    verdict = decide(None, [answer("ALLOWED", location_id="ELSEWHERE")], "LOC1")
    assert verdict is not None and verdict.status == "Invalid"


# ---------------------------------------------------------------------------- hostile answers


def owns_ems(cc: str, pid: str) -> bool:
    return (cc, pid) == ("PT", "EMS")


def envelope(data: Any, code: Any = 1000) -> dict[str, Any]:
    return {"data": data, "status_code": code, "timestamp": "2026-12-01T12:00:00Z"}


INFO = {"allowed": "ALLOWED", "token": token(), "authorization_reference": "AUTH-REF-9"}


def test_a_good_answer() -> None:
    got = parse_reply(7, 200, envelope(INFO), owns_ems, "PT/EMS")
    assert got == Answer(
        7,
        "answer",
        allowed="ALLOWED",
        owner="PT/EMS",
        parent_id_tag="GROUP1",
        authorization_reference="AUTH-REF-9",
    )
    # a peer that wraps the object in a list (the extrawest library does)
    assert parse_reply(7, 200, envelope([INFO]), owns_ems, "PT/EMS") == got
    # 2.1.1: no token in AuthorizationInfo; the owner is the peer's party
    bare = parse_reply(7, 200, envelope({"allowed": "BLOCKED"}), owns_ems, "PT/EMS")
    assert (bare.kind, bare.allowed, bare.owner) == ("answer", "BLOCKED", "PT/EMS")
    limited = parse_reply(
        7, 200, envelope({**INFO, "location": {"location_id": "LOC9"}}), owns_ems, "PT/EMS"
    )
    assert limited.location_id == "LOC9"


@pytest.mark.parametrize(
    ("http_status", "body", "kind"),
    [
        (404, {"status_code": 2004, "timestamp": "x"}, "unknown"),
        (404, None, "unknown"),
        (200, envelope(None, 2004), "unknown"),
        (500, envelope(INFO), "failed"),
        (302, None, "failed"),
        (200, None, "failed"),  # not JSON
        (200, ["not", "an", "envelope"], "failed"),
        (200, {"data": INFO}, "failed"),  # no status_code
        (200, envelope(INFO, True), "failed"),
        (200, envelope(INFO, "1000"), "failed"),
        (200, envelope(INFO, 2001), "failed"),
        (200, envelope(INFO, 1001), "failed"),  # "status_code not 1000"
        (200, envelope(INFO, 3000), "failed"),
        (200, envelope("ALLOWED"), "failed"),
        (200, envelope([INFO, INFO]), "failed"),
        (200, envelope({**INFO, "allowed": "MAYBE"}), "failed"),
        (200, envelope({**INFO, "allowed": "allowed"}), "failed"),
        (200, envelope({**INFO, "allowed": None}), "failed"),
        (200, envelope({**INFO, "token": "CARD1"}), "failed"),
        (200, envelope({**INFO, "token": token(party_id="XYZ")}), "failed"),  # not its party
        (200, envelope({**INFO, "token": token(party_id=["EMS"])}), "failed"),
        (200, envelope({**INFO, "token": token(country_code="PRT")}), "failed"),
        (200, envelope({**INFO, "token": token(party_id="EMS\n")}), "failed"),
    ],
)
def test_hostile_answers_are_no_answer(http_status: int, body: Any, kind: str) -> None:
    got = parse_reply(3, http_status, body, owns_ems, "PT/EMS")
    assert got.kind == kind and got.allowed is None and got.error
    assert not got.cacheable
    assert decide(None, [got], "LOC1") is None


def test_a_bad_reference_is_dropped_not_the_answer() -> None:
    for reference in ("R" * 37, "", 12, "bad\nref", "ref\n", "ünicode"):
        got = parse_reply(
            3, 200, envelope({**INFO, "authorization_reference": reference}), owns_ems, "PT/EMS"
        )
        assert got.kind == "answer" and got.authorization_reference is None


def test_a_hub_speaks_for_any_party() -> None:
    got = parse_reply(
        3, 200, envelope({**INFO, "token": token(party_id="abc")}), lambda cc, pid: True, "PT/MOB"
    )
    assert got.owner == "PT/ABC"


# ---------------------------------------------------------------------------- what is sent

LOCATION = {
    "id": "LOC1",
    "evses": [
        {"uid": "LOC1-01", "connectors": [{"id": "1"}, {"id": "2"}]},
        {"uid": "LOC1-02", "connectors": [{"id": "1"}]},
    ],
}


def test_location_references() -> None:
    def visible(location_id: str) -> bool:
        return False

    assert location_references(LOCATION, "2.2.1", visible) == {
        "location_id": "LOC1",
        "evse_uids": ["LOC1-01", "LOC1-02"],
    }
    assert location_references(LOCATION, "2.1.1", visible) == {
        "location_id": "LOC1",
        "evse_uids": ["LOC1-01", "LOC1-02"],
        "connector_ids": ["1", "2"],
    }
    # a Location hidden from the peer is not named to it; no Location, no body
    assert location_references(LOCATION, "2.2.1", lambda lid: lid == "LOC1") is None
    assert location_references(None, "2.2.1", visible) is None


# ---------------------------------------------------------------------------- whom to ask


def peer(**extra: Any) -> Peer:
    base = Peer(
        id=1,
        status="registered",
        token_in="C",
        token_out="B",
        token_out_base64=True,
        versions_url="https://emsp.example/versions",
        version="2.2.1",
        endpoints=[
            {"identifier": "tokens", "role": "SENDER", "url": "https://emsp.example/tokens/"},
            {"identifier": "tokens", "role": "RECEIVER", "url": "https://emsp.example/rtokens/"},
        ],
        roles=[],
        initiated_by="peer",
        parties={("PT", "EMS")},
        grant_role="EMSP",
        policy=PeerPolicy.default("EMSP"),
    )
    return replace(base, **extra)


def test_whom_to_ask() -> None:
    assert askable(peer())
    assert tokens_url(peer()) == "https://emsp.example/tokens/"
    assert not askable(peer(policy=replace(PeerPolicy.default("EMSP"), realtime_auth=False)))
    assert not askable(peer(suspended_at="2026-12-01T00:00:00Z"))
    assert not askable(peer(status="unregistered"))
    assert not askable(peer(grant_role="SCSP"))
    assert not askable(peer(grant_role=None))
    assert not askable(peer(endpoints=[]))
    # MOBI.E: whitelist-only by its profile, whatever else the policy says
    mobie = replace(PeerPolicy.default("HUB", mobie_mode=True), realtime_auth=True)
    assert mobie.mobie and not askable(peer(grant_role="HUB", policy=mobie))
    hub = replace(PeerPolicy.default("HUB"), realtime_auth=True)
    assert askable(peer(grant_role="HUB", policy=hub))
    # 2.1.1 endpoints have no role
    old = peer(version="2.1.1", endpoints=[{"identifier": "tokens", "url": "https://e/t/"}])
    assert askable(old) and tokens_url(old) == "https://e/t/"
    assert not askable(replace(old, version="2.2.1"))


# ---------------------------------------------------------------------------- the cache


def test_cache_expires_on_the_clock_and_keeps_only_answers() -> None:
    cache = AnswerCache(300)
    cache.put("card1", "RFID", answer("ALLOWED", peer_id=1), NOW)
    cache.put("card2", "RFID", failed(1), NOW)
    cache.put("card3", "RFID", unknown(1), NOW)
    assert cache.get(1, "CARD1", "rfid", NOW + timedelta(seconds=299)) == answer("ALLOWED")
    assert cache.get(2, "CARD1", "RFID", NOW) is None  # another peer
    assert cache.get(1, "CARD1", "OTHER", NOW) is None  # another type
    assert cache.get(1, "CARD2", "RFID", NOW) is None  # failures are not kept
    assert cache.get(1, "CARD3", "RFID", NOW) is None
    assert cache.get(1, "CARD1", "RFID", NOW + timedelta(seconds=300)) is None
    assert len(cache) == 0


def test_cache_zero_keeps_nothing() -> None:
    cache = AnswerCache(0)
    cache.put("card1", "RFID", answer("ALLOWED"), NOW)
    assert cache.get(1, "CARD1", "RFID", NOW) is None and len(cache) == 0


def test_cache_is_bounded_oldest_out() -> None:
    cache = AnswerCache(300, max_entries=3)
    for i in range(5):
        cache.put(f"card{i}", "RFID", answer("ALLOWED"), NOW)
    assert len(cache) == 3
    assert cache.get(1, "CARD0", "RFID", NOW) is None
    assert cache.get(1, "CARD1", "RFID", NOW) is None
    assert cache.get(1, "CARD4", "RFID", NOW) is not None
    cache.put("card2", "RFID", answer("BLOCKED"), NOW)  # renewed: newest again
    cache.put("card5", "RFID", answer("ALLOWED"), NOW)
    assert cache.get(1, "CARD2", "RFID", NOW) == answer("BLOCKED")
    assert cache.get(1, "CARD3", "RFID", NOW) is None
    assert len(cache) == 3


# ---------------------------------------------------------------------------- configuration


def test_config_defaults_and_bounds() -> None:
    from csms.ports import ConfigError
    from ocpi_bridge.config import load_ocpi_settings

    base = {"party_id": "CPO", "business_name": "CPO Lda"}
    settings = load_ocpi_settings(base)
    assert settings is not None
    assert (settings.realtime_auth_timeout, settings.realtime_auth_cache) == (5.0, 300)
    ok = load_ocpi_settings({**base, "realtime_auth_timeout": 1, "realtime_auth_cache": 0})
    assert ok is not None and ok.realtime_auth_cache == 0
    for key, value in (
        ("realtime_auth_timeout", 0.5),
        ("realtime_auth_timeout", 31),
        ("realtime_auth_cache", -1),
        ("realtime_auth_cache", "often"),
    ):
        with pytest.raises(ConfigError, match=f"ocpi.{key}"):
            load_ocpi_settings({**base, key: value})
