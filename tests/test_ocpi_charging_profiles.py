"""OCPI 2.2.1 ChargingProfiles (the CPO as Receiver) end to end, and its pure core.

Everything runs over real sockets on 127.0.0.1: csms with the OCPI bridge and smart charging;
the independent peer (extrawest-ocpi, tests/ocpi_peer) registers with a token A the operator
made granting SCSP (the role of a smart charging party), and, started with ``--role SCSP``,
serves the library's chargingprofiles route where our results are POSTed; a simulated OCPP
1.6 station (charger_sim) charges and holds the TxProfiles csms sends it. An eMSP peer
(granted EMSP) is the one that must be refused.

Each test has its own central system; the peers' processes are shared by the module (they
register again with every new central system). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from charger_sim import Behaviour, Station
from csms.ports import SessionSchedule
from ocpi_bridge.charging_profiles import (
    MAX_PERIODS,
    ChargingProfiles,
    Pacer,
    SetChargingProfile,
    active_profile,
    duration_of,
    response_url_of,
    result_word,
    schedule_of,
    transaction_id_of,
)
from ocpi_bridge.client import OcpiClient
from ocpi_bridge.schemas import parse
from ocpi_bridge.transport import OcpiError
from tests.conftest import Running, start_system
from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing

# the async tests share the module-scoped peers, so the module's event loop
E2E = pytest.mark.asyncio(loop_scope="module")

STATION = "SCP1"
TAG = "SMART-TAG-1"
WAIT = 10.0  # upper bound for a result to reach the peer
INTERVAL = 10  # ocpi.charging_profile_interval: the default
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------- pure core


def profile(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "charging_rate_unit": "A",
        "charging_profile_period": [
            {"start_period": 0, "limit": 16},
            {"start_period": 600, "limit": 10.5},
        ],
    }
    body.update(kw)
    return body


def set_body(url: str = "https://scsp.example.com/r/1", **kw: Any) -> dict[str, Any]:
    return {"charging_profile": profile(**kw), "response_url": url}


def test_a_profile_becomes_csms_schedule_with_one_decimal_cut_down() -> None:
    req: SetChargingProfile = parse(
        SetChargingProfile,
        set_body(
            start_date_time="2026-01-01T12:00:00Z",
            duration=3600,
            min_charging_rate=6.19,
            charging_profile_period=[
                {"start_period": 0, "limit": 16.29},
                {"start_period": 60, "limit": 0},
            ],
        ),
    )
    s = schedule_of(req.charging_profile)
    assert s == SessionSchedule(
        unit="A",
        periods=((0, Decimal("16.2")), (60, Decimal("0.0"))),
        start=T0,
        duration=3600,
        min_rate=Decimal("6.1"),
    )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"charging_rate_unit": "kW"}, "charging_profile.charging_rate_unit"),
        ({"charging_profile_period": []}, "charging_profile.charging_profile_period"),
        (
            {"charging_profile_period": [{"start_period": 5, "limit": 1}]},
            "the first start_period must be 0",
        ),
        (
            {
                "charging_profile_period": [
                    {"start_period": 0, "limit": 1},
                    {"start_period": 0, "limit": 2},
                ]
            },
            "start_period must increase",
        ),
        (
            {"charging_profile_period": [{"start_period": 0, "limit": -1}]},
            "charging_profile.charging_profile_period.0.limit",
        ),
        (
            {"charging_profile_period": [{"start_period": 0, "limit": "16"}]},
            "charging_profile.charging_profile_period.0.limit",
        ),
        (
            {"charging_profile_period": [{"start_period": 0, "limit": True}]},
            "charging_profile.charging_profile_period.0.limit",
        ),
        (
            {"charging_profile_period": [{"start_period": 0.5, "limit": 1}]},
            "charging_profile.charging_profile_period.0.start_period",
        ),
        ({"start_date_time": "tomorrow"}, "charging_profile.start_date_time"),
        ({"duration": 0}, "charging_profile.duration"),
        ({"min_charging_rate": -2}, "charging_profile.min_charging_rate"),
        ({"numberPhases": 3}, "charging_profile.numberPhases: unknown field"),
        (
            {
                "charging_profile_period": [
                    {"start_period": n, "limit": 1} for n in range(MAX_PERIODS + 1)
                ]
            },
            "charging_profile.charging_profile_period",
        ),
    ],
)
def test_a_bad_profile_is_refused_naming_what(change: dict[str, Any], named: str) -> None:
    with pytest.raises(OcpiError) as e:
        parse(SetChargingProfile, set_body(**change))
    assert e.value.status_code == 2001
    assert named in e.value.message, e.value.message


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"charging_profile": profile()},  # no response_url
        {"charging_profile": profile(), "response_url": "ftp://x/y"},
        {"charging_profile": profile(), "response_url": "https://x/" + "a" * 300},
        {"response_url": "https://x/y"},
    ],
)
def test_a_bad_request_body_is_refused(body: Any) -> None:
    with pytest.raises(OcpiError) as e:
        parse(SetChargingProfile, body)
    assert e.value.status_code == 2001


def test_session_ids_and_query_parameters() -> None:
    assert transaction_id_of("42") == 42
    for other in ("abc", "-1", "4 2", "1" * 19, "٤٢", ""):
        assert transaction_id_of(other) is None
    assert duration_of({"duration": "900"}) == 900
    for bad in (
        {},
        {"duration": "0"},
        {"duration": "-5"},
        {"duration": "1e3"},
        {"duration": "86401"},
    ):
        with pytest.raises(OcpiError):
            duration_of(bad)
    assert response_url_of({"response_url": "http://a/b?c=1"}) == "http://a/b?c=1"
    for bad_url in ({}, {"response_url": "x"}, {"response_url": "https://a b"}):
        with pytest.raises(OcpiError):
            response_url_of(bad_url)
    assert [result_word(w) for w in ("ACCEPTED", "UNKNOWN", "REJECTED", None, "Accepted")] == [
        "ACCEPTED",
        "UNKNOWN",
        "REJECTED",
        "REJECTED",
        "REJECTED",
    ]


def test_the_pacer_refuses_a_second_request_within_the_interval_only() -> None:
    pacer = Pacer(10)
    key = (1, "42", "set")
    assert pacer.allow(key, T0)
    assert not pacer.allow(key, T0 + timedelta(seconds=9.9))
    assert pacer.allow((1, "42", "get"), T0)  # another kind
    assert pacer.allow((2, "42", "set"), T0)  # another peer
    assert pacer.allow((1, "43", "set"), T0)  # another session
    assert pacer.allow(key, T0 + timedelta(seconds=10))
    assert Pacer(0).allow(key, T0) and Pacer(0).allow(key, T0)


def test_the_pacer_stays_bounded() -> None:
    pacer = Pacer(10, room=3)
    for n in range(3):
        assert pacer.allow((1, str(n), "set"), T0)
    assert not pacer.allow((1, "new", "set"), T0 + timedelta(seconds=1))  # full: wait
    assert pacer.allow((1, "new", "set"), T0 + timedelta(seconds=10))  # the old ones expired
    assert len(pacer._last) == 1


def test_an_active_profile_from_a_composite_schedule() -> None:
    s = SessionSchedule("W", ((0, Decimal("7360")), (300, Decimal("3680.06"))), T0, 900)
    assert active_profile(s, T0 + timedelta(hours=1)) == {
        "start_date_time": "2026-01-01T12:00:00Z",
        "charging_profile": {
            "start_date_time": "2026-01-01T12:00:00Z",
            "charging_rate_unit": "W",
            "duration": 900,
            "charging_profile_period": [
                {"start_period": 0, "limit": 7360.0},
                {"start_period": 300, "limit": 3680.0},
            ],
        },
    }
    no_start = SessionSchedule("A", ((0, Decimal(16)),))
    assert active_profile(no_start, T0)["start_date_time"] == "2026-01-01T12:00:00Z"  # type: ignore[index]
    assert active_profile(SessionSchedule("kW", ((0, Decimal(1)),)), T0) is None
    assert active_profile(SessionSchedule("A", ()), T0) is None
    assert active_profile(SessionSchedule("A", ((0, Decimal("NaN")),)), T0) is None


class _Bridge:
    """The little of the bridge ChargingProfiles reads to check a response_url."""

    def __init__(self, allow_private: bool) -> None:
        from ocpi_bridge.config import OcpiSettings

        self.settings = OcpiSettings(party_id="CPO", business_name="x")
        self.client = OcpiClient(5.0, ("PT", "CPO"), allow_private=allow_private)
        self.clock = None
        self.csms = None


def test_a_response_url_must_pass_the_peer_url_checks() -> None:
    strict = ChargingProfiles(_Bridge(allow_private=False))  # type: ignore[arg-type]
    for url in ("http://127.0.0.1:9/r", "http://10.0.0.1/r", "http://[::1]/r"):
        with pytest.raises(OcpiError) as e:
            strict._check_target(url)
        assert e.value.status_code == 2001 and "allow_private_peer_addresses" in e.value.message
    strict._check_target("https://9.9.9.9/r")  # (public: checked again when resolved)
    ChargingProfiles(_Bridge(allow_private=True))._check_target("http://127.0.0.1:9/r")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- end to end


def sim() -> Behaviour:
    return Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.01)


async def eventually(
    probe: Callable[[], Any], what: str, timeout: float = WAIT, interval: float = 0.05
) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(interval)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def scsp() -> AsyncIterator[EmspPeer]:
    """A smart charging party, PT/SCP."""
    try:
        async with EmspPeer(party_id="SCP", country_code="PT", role="SCSP") as peer:
            yield peer
    except PeerVenvMissing as e:
        pytest.fail(str(e))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def ems() -> AsyncIterator[EmspPeer]:
    """An eMSP, PT/EMS: never granted SCSP."""
    try:
        async with EmspPeer(party_id="EMS", country_code="PT") as peer:
            yield peer
    except PeerVenvMissing as e:
        pytest.fail(str(e))


async def register(cpo: Running, peer: EmspPeer) -> dict[str, Any]:
    status, body = await cpo.api.post("/api/v1/ocpi/token-a", peer.grant)
    assert status == 201, body
    result = await peer.register_with(body["versions_url"], body["token"])
    assert result["ok"], result
    return result


class Scene:
    """csms with OCPI and smart charging, the SCSP peer registered, station SCP1 charging
    with a transaction on connector 1."""

    def __init__(self, cpo: Running, peer: EmspPeer) -> None:
        self.cpo = cpo
        self.peer = peer
        self.station: Station | None = None
        self.tx = 0

    @property
    def st(self) -> Station:
        assert self.station is not None
        return self.station

    def url(self, session_id: str | int) -> str:
        return f"{self.cpo.http_url}/ocpi/2.2.1/chargingprofiles/{session_id}"

    def response_url(self) -> tuple[str, str]:
        """A response_url at the peer's chargingprofiles route, and its unique mark."""
        mark = uuid.uuid4().hex
        return f"{self.peer.base_url}/ocpi/emsp/2.2.1/chargingprofiles/?ref={mark}", mark

    async def call(
        self,
        method: str,
        session_id: str | int,
        body: Any = None,
        params: dict[str, Any] | None = None,
        peer: EmspPeer | None = None,
        **kw: Any,
    ) -> tuple[int, dict[str, Any]]:
        """One request to our chargingprofiles module; (HTTP status, envelope)."""
        exchange = await (peer or self.peer).call(
            method,
            url=self.url(session_id),
            module="chargingprofiles",
            json_body=body,
            params=params,
            **kw,
        )
        response = exchange["response"]
        assert response is not None, exchange
        return response["status"], response["json"]

    async def result(self, mark: str) -> dict[str, Any]:
        """The body POSTed to the response_url marked ``mark`` (exactly one)."""

        async def probe() -> list[dict[str, Any]]:
            return [
                r
                for r in await self.peer.requests(method="POST", path="chargingprofiles")
                if mark in str(r.get("query"))
            ]

        async def answered() -> list[dict[str, Any]]:
            return [r for r in await probe() if r.get("response") is not None]

        found = await eventually(answered, f"the result {mark} at the peer, answered")
        assert found[0]["response"]["status"] == 200, found[0]
        await asyncio.sleep(0.2)  # (one result, not more)
        assert len(await probe()) == 1
        return found[0]["body"]


async def _scene(tmp_path: Path, peer: EmspPeer, smart: dict[str, Any] | None) -> Any:
    system, session, cpo = await start_system(tmp_path, ocpi={}, smart=smart)
    scene = Scene(cpo, peer)
    try:
        await peer.clear_requests()  # (the peer serves every test of the module)
        await register(cpo, peer)
        await cpo.define_station(STATION)
        await cpo.put_tag(TAG)
        st = Station(STATION, cpo.ocpp_url, 2, behaviour=sim())
        scene.station = st
        await st.connect()
        await st.boot_and_report()
        answer = await st.start_charging(1, TAG)
        assert answer is not None and answer["idTagInfo"]["status"] == "Accepted", answer
        scene.tx = int(answer["transactionId"])
        yield scene
    finally:
        if scene.station is not None:
            with contextlib.suppress(Exception):
                await scene.station.disconnect()
        await session.close()
        await system.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def scene(tmp_path: Path, scsp: EmspPeer) -> AsyncIterator[Scene]:
    async for s in _scene(tmp_path, scsp, {}):
        yield s


def tx_profiles(st: Station, tx: int) -> list[dict[str, Any]]:
    return [
        p
        for p in st.charging_profiles.values()
        if p.get("charging_profile_purpose") == "TxProfile" and p.get("transaction_id") == tx
    ]


def accepted(status: int, envelope: dict[str, Any]) -> None:
    assert status == 200, envelope
    assert envelope["status_code"] == 1000, envelope
    assert envelope["data"] == {"result": "ACCEPTED", "timeout": 60}, envelope


@E2E
async def test_scsp_sees_the_module_in_our_version_details(scene: Scene) -> None:
    state = await scene.peer.state()
    connection = state["current"]
    ours = {e["identifier"]: e for e in connection["endpoints"]}
    assert ours["chargingprofiles"] == {
        "identifier": "chargingprofiles",
        "role": "RECEIVER",
        "url": scene.url("").rstrip("/"),
    }


@E2E
async def test_set_get_clear_a_session_profile(scene: Scene) -> None:
    st, tx = scene.st, scene.tx
    url, mark = scene.response_url()
    status, envelope = await scene.call("PUT", tx, set_body(url))
    accepted(status, envelope)
    assert await scene.result(mark) == {"result": "ACCEPTED"}
    held = tx_profiles(st, tx)
    assert len(held) == 1, st.charging_profiles
    schedule = held[0]["charging_schedule"]
    assert schedule["charging_rate_unit"] == "A"
    periods = [(p["start_period"], p["limit"]) for p in schedule["charging_schedule_period"]]
    assert periods == [(0, 16.0), (600, 10.5)], schedule
    assert st.limit_a(1) == 16.0

    # GET: the station's composite schedule, as an ActiveChargingProfile
    url, mark = scene.response_url()
    status, envelope = await scene.call("GET", tx, params={"duration": "900", "response_url": url})
    accepted(status, envelope)
    got = await scene.result(mark)
    assert got["result"] == "ACCEPTED", got
    active = got["profile"]
    assert active["charging_profile"]["charging_rate_unit"] == "A"
    first = active["charging_profile"]["charging_profile_period"][0]
    assert first == {"start_period": 0, "limit": 16.0}, active
    start = datetime.fromisoformat(active["start_date_time"].replace("Z", "+00:00"))
    assert abs((start - datetime.now(UTC)).total_seconds()) < 60, active

    # DELETE: the session's TxProfile goes (no site limits it)
    url, mark = scene.response_url()
    status, envelope = await scene.call("DELETE", tx, params={"response_url": url})
    accepted(status, envelope)
    assert await scene.result(mark) == {"result": "ACCEPTED"}
    assert tx_profiles(st, tx) == [], st.charging_profiles
    assert st.limit_a(1) is None


@E2E
async def test_too_often(scene: Scene) -> None:
    url, mark = scene.response_url()
    accepted(*await scene.call("PUT", scene.tx, set_body(url)))
    status, envelope = await scene.call("PUT", scene.tx, set_body(url))
    assert status == 200 and envelope["status_code"] == 1000, envelope
    assert envelope["data"] == {"result": "TOO_OFTEN", "timeout": 60}
    # another kind of request for the same session is paced on its own
    get_url, get_mark = scene.response_url()
    accepted(*await scene.call("GET", scene.tx, params={"duration": "60", "response_url": get_url}))
    assert await scene.result(mark) == {"result": "ACCEPTED"}  # only the first one's
    assert (await scene.result(get_mark))["result"] == "ACCEPTED"


@E2E
async def test_unknown_sessions(scene: Scene) -> None:
    url, _ = scene.response_url()
    for session_id in (scene.tx + 1000, "not-ours", "99999999999999999999"):
        status, envelope = await scene.call("PUT", session_id, set_body(url))
        assert status == 200 and envelope["data"]["result"] == "UNKNOWN_SESSION", envelope
        status, envelope = await scene.call(
            "GET", session_id, params={"duration": "60", "response_url": url}
        )
        assert envelope["data"]["result"] == "UNKNOWN_SESSION", envelope
    # a finished session is no longer steerable
    await scene.st.stop_charging(1)

    async def stopped() -> bool:
        status, body = await scene.cpo.api.get(f"/api/v1/transactions/{scene.tx}")
        return status == 200 and body.get("stop_time") is not None

    await eventually(stopped, "the transaction stopped")
    status, envelope = await scene.call("DELETE", scene.tx, params={"response_url": url})
    assert envelope["data"]["result"] == "UNKNOWN_SESSION", envelope
    assert not await scene.peer.requests(method="POST", path="chargingprofiles")


@E2E
async def test_hostile_requests_get_ocpi_errors(scene: Scene) -> None:
    url, _ = scene.response_url()
    bad: list[tuple[str, Any, dict[str, Any] | None]] = [
        ("PUT", {"charging_profile": profile(charging_rate_unit="kW"), "response_url": url}, None),
        ("PUT", {"charging_profile": profile()}, None),
        ("PUT", [1, 2], None),
        ("PUT", {"charging_profile": profile(), "response_url": url, "x": 1}, None),
        ("GET", None, {"response_url": url}),
        ("GET", None, {"duration": "ten", "response_url": url}),
        ("GET", None, {"duration": "60"}),
        ("DELETE", None, {}),
        ("DELETE", None, {"response_url": "javascript:alert(1)"}),
    ]
    for method, body, params in bad:
        status, envelope = await scene.call(method, scene.tx, body, params=params)
        assert status == 200 and envelope["status_code"] == 2001, (method, body, envelope)
    # not JSON: HTTP 400, OCPI 2001
    status, envelope = await scene.call(
        "PUT", scene.tx, None, headers={"Content-Type": "application/json"}
    )
    assert status == 400 and envelope["status_code"] == 2001, envelope
    # a session id that is no CiString(36)
    status, envelope = await scene.call("PUT", "9" * 40, set_body(url))
    assert envelope["status_code"] == 2001, envelope
    # nothing reached the station, nothing was POSTed back
    assert tx_profiles(scene.st, scene.tx) == []
    assert not await scene.peer.requests(method="POST", path="chargingprofiles")


@E2E
async def test_only_scsp_may_steer_and_scsp_only_steers(scene: Scene, ems: EmspPeer) -> None:
    await register(scene.cpo, ems)
    connection = (await ems.state())["current"]
    assert "chargingprofiles" not in {e["identifier"] for e in connection["endpoints"]}
    url, _ = scene.response_url()
    for method, body, params in (
        ("PUT", set_body(url), None),
        ("GET", None, {"duration": "60", "response_url": url}),
        ("DELETE", None, {"response_url": url}),
    ):
        status, envelope = await scene.call(method, scene.tx, body, params=params, peer=ems)
        assert status == 403 and envelope["status_code"] == 2000, envelope
        assert "SCSP" in envelope["status_message"], envelope
    assert tx_profiles(scene.st, scene.tx) == []
    # and a smart charging party does not act as an eMSP: those modules are not listed to
    # it, and refused when called anyway
    listed = {e["identifier"] for e in (await scene.peer.state())["current"]["endpoints"]}
    assert not listed & {"sessions", "cdrs", "tokens", "commands"}, listed
    base = f"{scene.cpo.http_url}/ocpi/2.2.1"
    for module, path in (("sessions", ""), ("cdrs", ""), ("tokens", "PT/SCP/X1")):
        exchange = await scene.peer.call("GET", url=f"{base}/{module}/{path}")
        response = exchange["response"]
        assert response is not None, exchange
        assert response["status"] == 403 and response["json"]["status_code"] == 2000, response
    exchange = await scene.peer.call("GET", module="locations")
    assert exchange["response"]["status"] == 200, exchange


@pytest_asyncio.fixture(loop_scope="module")
async def no_smart(tmp_path: Path, scsp: EmspPeer) -> AsyncIterator[Scene]:
    async for s in _scene(tmp_path, scsp, None):
        yield s


@E2E
async def test_without_smart_charging_the_module_is_not_supported(no_smart: Scene) -> None:
    connection = (await no_smart.peer.state())["current"]
    assert "chargingprofiles" not in {e["identifier"] for e in connection["endpoints"]}
    url, _ = no_smart.response_url()
    status, envelope = await no_smart.call("PUT", no_smart.tx, set_body(url))
    assert status == 200 and envelope["data"] == {"result": "NOT_SUPPORTED", "timeout": 60}
    assert not await no_smart.peer.requests(method="POST", path="chargingprofiles")


class _Clock:
    def __init__(self) -> None:
        self.slept: list[datetime] = []

    def now(self) -> datetime:
        return T0

    async def sleep_until(self, when: datetime) -> None:
        self.slept.append(when)


class _Client:
    """Fails ``failures`` times, then acknowledges; records what it was asked."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[str, str, Any, tuple[str, str] | None]] = []

    async def request(self, method: str, url: str, token: str, **kw: Any) -> Any:
        from ocpi_bridge.client import OcpiCallFailed, OcpiReply

        self.calls.append((method, url, kw["body"], kw["to_party"]))
        if len(self.calls) <= self.failures:
            raise OcpiCallFailed("connection refused")
        return OcpiReply(200, {"status_code": 1000}, {})


class _DeliveryBridge(_Bridge):
    def __init__(self, failures: int, peers: list[Any]) -> None:
        super().__init__(allow_private=True)
        self.client = _Client(failures)  # type: ignore[assignment]
        self.clock = _Clock()  # type: ignore[assignment]
        self.peers = peers

    def registered_peers(self) -> list[Any]:
        return self.peers


def _request() -> Any:
    from ocpi_bridge.charging_profiles import Request

    return Request("set", 7, ("PT", "SCP"), "42", 42, "http://127.0.0.1:1/r?x=1")


def _peer() -> Any:
    from ocpi_bridge.store import Peer

    return Peer(7, "registered", "in", "out", True, "http://p/v", "2.2.1", [], [], "peer")


@E2E
async def test_a_result_is_retried_until_acknowledged() -> None:
    bridge = _DeliveryBridge(failures=2, peers=[_peer()])
    await ChargingProfiles(bridge)._deliver(_request(), {"result": "ACCEPTED"})  # type: ignore[arg-type]
    assert (
        bridge.client.calls
        == [  # type: ignore[attr-defined]
            ("POST", "http://127.0.0.1:1/r?x=1", {"result": "ACCEPTED"}, ("PT", "SCP"))
        ]
        * 3
    )
    assert len(bridge.clock.slept) == 2  # type: ignore[attr-defined]


@E2E
async def test_a_result_is_given_up_after_bounded_attempts_or_when_the_peer_left() -> None:
    from ocpi_bridge.charging_profiles import DELIVERY_ATTEMPTS

    bridge = _DeliveryBridge(failures=100, peers=[_peer()])
    await ChargingProfiles(bridge)._deliver(_request(), {"result": "REJECTED"})  # type: ignore[arg-type]
    assert len(bridge.client.calls) == DELIVERY_ATTEMPTS  # type: ignore[attr-defined]
    gone = _DeliveryBridge(failures=0, peers=[])
    await ChargingProfiles(gone)._deliver(_request(), {"result": "ACCEPTED"})  # type: ignore[arg-type]
    assert gone.client.calls == []  # type: ignore[attr-defined]
