"""The operator's per-peer decisions (ocpi_bridge.peers), a pure core: defaults per role,
validation of hostile input, never more than the role allows, and how a Location, its
tariffs and a tariff list look to one peer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ocpi_bridge.peers import (
    CALLABLE,
    PeerPolicy,
    location_for,
    private_tariffs,
    tariffs_for,
)
from ocpi_bridge.store import Grant


def test_defaults_follow_the_role_and_mobie_mode() -> None:
    mobie = PeerPolicy.default("HUB", mobie_mode=True)
    assert mobie.mobie and not mobie.realtime_auth
    assert "hubclientinfo" not in mobie.uses and "tariffs" not in mobie.receives
    other_hub = PeerPolicy.default("HUB", mobie_mode=False)
    assert not other_hub.mobie and "hubclientinfo" in other_hub.uses
    emsp = PeerPolicy.default("EMSP", mobie_mode=True)
    assert not emsp.mobie and emsp.realtime_auth
    assert "chargingprofiles" not in emsp.uses and "hubclientinfo" not in emsp.uses
    scsp = PeerPolicy.default("SCSP")
    assert scsp.uses == {"locations", "tariffs", "chargingprofiles"}
    assert "sessions" not in scsp.receives


def test_a_policy_never_exceeds_its_role() -> None:
    with pytest.raises(ValueError, match="uses: 'chargingprofiles' is not for a peer granted EMSP"):
        PeerPolicy.make("EMSP", {"uses": ["locations", "chargingprofiles"]})
    with pytest.raises(ValueError, match="receives: 'sessions'"):
        PeerPolicy.make("SCSP", {"receives": ["sessions"]})
    with pytest.raises(ValueError, match="mobie: only a peer granted HUB"):
        PeerPolicy.make("EMSP", {"mobie": True})
    # a stored policy read for a role that changed is cut to the new role
    wide = PeerPolicy.make("HUB", {"uses": sorted(set(CALLABLE) - {"chargingprofiles"})})
    assert wide.within("SCSP").uses == {"locations", "tariffs"}
    assert not PeerPolicy.make("HUB", {"mobie": True}).within("EMSP").mobie


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("nope", "policy: an object"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"name": "x" * 81}, "name: text of at most 80"),
        ({"name": "bad\nname"}, "name: control characters"),
        ({"name": 5}, "name: text"),
        ({"uses": 5}, "uses: a list"),
        ({"uses": [None]}, "uses: entries are non-empty texts"),
        ({"uses": ["x"] * 1001}, "uses: at most 1000"),
        ({"mobie": "yes"}, "mobie: true or false"),
        ({"realtime_auth": 1}, "realtime_auth: true or false"),
        ({"hidden": ["LOC 1"]}, "hidden: 'LOC 1' is not a Location id"),
        ({"hidden": ["A" * 37]}, "is not a Location id"),
        ({"hidden": {"a": 1}}, "hidden: a list"),
        ({"tariffs": ["A"]}, "tariffs: an object"),
        ({"tariffs": {"A": "A"}}, "replaced by itself"),
        ({"tariffs": {"A": "B", "a": "C"}}, "given twice"),
        ({"tariffs": {"A": 5}}, "is not a tariff id"),
        ({"tariffs": "A-B"}, "is not OURS=THEIRS"),
        ({"tariffs": {f"T{i}": f"U{i}" for i in range(201)}}, "tariffs: at most 200"),
        ({"version": "3.0"}, "version: one of 2.2.1, 2.2, 2.1.1"),
    ],
)
def test_hostile_input_is_refused_naming_the_field(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        PeerPolicy.make("EMSP", data)


def test_round_trip_and_web_form_shapes() -> None:
    policy = PeerPolicy.make(
        "EMSP",
        {
            "name": "  Partner A  ",
            "uses": "locations, tariffs tokens",
            "receives": ["LOCATIONS", "cdrs"],
            "hidden": "LOC-1 LOC-2",
            "tariffs": "STD=PARTNER-A, fast=FAST-A",
            "version": "2.1.1",
            "realtime_auth": False,
        },
    )
    assert policy.name == "Partner A"
    assert policy.uses == {"locations", "tariffs", "tokens"}
    assert policy.receives == {"locations", "cdrs"}
    assert policy.hidden == {"LOC-1", "LOC-2"}
    assert policy.tariffs == {"STD": "PARTNER-A", "fast": "FAST-A"}
    again = PeerPolicy.from_json(policy.to_json(), "EMSP", mobie_mode=True)
    assert again == policy
    assert json.loads(policy.to_json())["version"] == "2.1.1"
    # a stored policy that no longer validates is read as the narrowest, not the widest
    broken = PeerPolicy.from_json(json.dumps({"uses": ["nonsense"]}), "EMSP", True)
    assert broken.uses == frozenset() and broken.receives == frozenset()
    # the grant carries it
    grant = Grant.make("EMSP", "PT/EMA", {"name": "A"})
    assert grant.policy is not None and grant.policy.name == "A"
    assert grant.describe() == "EMSP PT/EMA (A)"
    # a policy given for MOBI.E in MOBI.E mode is laid over MOBI.E's defaults
    hub = Grant.make("HUB", "PT/MOB", {"name": "MOBI.E"}, mobie_mode=True)
    assert hub.policy is not None and hub.policy.mobie and "hubclientinfo" not in hub.policy.uses
    assert Grant.make("HUB", "PT/MOB").policy is None  # (the defaults, decided at use)


def _location() -> dict[str, Any]:
    return {
        "id": "LOC-1",
        "mobie_voltage_level": "BTN",
        "evses": [
            {"uid": "E1", "connectors": [{"id": "1", "tariff_ids": ["STD", "FAST"]}]},
            {"uid": "E2", "connectors": [{"id": "1", "tariff_ids": []}]},
        ],
    }


def test_a_location_as_one_peer_sees_it() -> None:
    location = _location()
    before = json.dumps(location, sort_keys=True)
    mobie = PeerPolicy.default("HUB", mobie_mode=True)
    assert location_for(mobie, location) is location  # MOBI.E: as built, extensions included
    plain = location_for(PeerPolicy.default("EMSP"), location)
    assert "mobie_voltage_level" not in plain and plain["evses"] == location["evses"]
    partner = PeerPolicy.make("EMSP", {"tariffs": {"std": "PARTNER", "FAST": "PARTNER"}})
    mine = location_for(partner, location)
    assert mine["evses"][0]["connectors"][0]["tariff_ids"] == ["PARTNER"]
    assert mine["evses"][1]["connectors"][0]["tariff_ids"] == []
    assert json.dumps(location, sort_keys=True) == before  # the shared object is not changed
    hider = PeerPolicy.make("EMSP", {"hidden": ["loc-1"]})
    assert not hider.sees_location("LOC-1") and hider.sees_location("LOC-2")


def test_private_tariffs_are_seen_by_their_peers_only() -> None:
    a = PeerPolicy.make("EMSP", {"tariffs": {"STD": "PARTNER-A"}})
    b = PeerPolicy.make("EMSP", {})
    private = private_tariffs([a, b])
    ids = ["STD", "FAST", "partner-a"]
    assert tariffs_for(a, ids, private) == ["STD", "FAST", "partner-a"]
    assert tariffs_for(b, ids, private) == ["STD", "FAST"]
