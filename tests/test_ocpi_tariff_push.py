"""Our tariffs pushed to the peers (issue 19), end to end against the independent peer.

Everything runs over real sockets on 127.0.0.1: csms with the OCPI bridge, and eMSP peers
(extrawest-ocpi, tests/ocpi_peer) whose tariffs Receiver validates what it gets with the
library's models and stores it (``GET _control/objects/tariffs``). The tariffs change
through the operator API; a peer's prices (its replacement tariffs) and suspension through
its policy (``PATCH /api/v1/ocpi/peers/{id}``). A peer made to hang (SIGSTOP) stands for a
peer that fails. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from csms.app import CentralSystem
from ocpi_bridge.versions import outgoing
from tests.conftest import Api, Running, start_system
from tests.daemon import Daemon
from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing
from tests.test_push_strict import DAEMON_OCPI

WAIT = 10.0  # upper bound for a push to reach a peer
# short retries and a push timeout well above what a push takes here, well below WAIT
OCPI = {"retry_max_seconds": 1, "push_timeout": 5.0}
ROUTING = (
    "ocpi-from-country-code",
    "ocpi-from-party-id",
    "ocpi-to-country-code",
    "ocpi-to-party-id",
)


def tariff(price: float, kind: str = "ENERGY") -> dict[str, Any]:
    return {
        "currency": "EUR",
        "type": "REGULAR",
        "elements": [
            {"price_components": [{"type": kind, "price": price, "vat": 23, "step_size": 1}]}
        ],
    }


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


async def start_peer(party_id: str, role: str = "EMSP") -> EmspPeer:
    try:
        return await EmspPeer(party_id=party_id, country_code="PT", role=role).start()
    except PeerVenvMissing as e:
        pytest.fail(str(e))


@pytest_asyncio.fixture
async def ema() -> AsyncIterator[EmspPeer]:
    peer = await start_peer("EMA")
    try:
        yield peer
    finally:
        await peer.stop()


@pytest_asyncio.fixture
async def emb() -> AsyncIterator[EmspPeer]:
    peer = await start_peer("EMB")
    try:
        yield peer
    finally:
        await peer.stop()


class Cpo:
    """csms with the OCPI bridge, started (and started again) on one data directory."""

    def __init__(self, tmp_path: Path, **ocpi: Any) -> None:
        self.tmp_path = tmp_path
        self.ocpi = {**OCPI, **ocpi}
        self.system: CentralSystem | None = None
        self.session: aiohttp.ClientSession | None = None
        self.running: Running | None = None

    async def start(self) -> Running:
        self.system, self.session, self.running = await start_system(self.tmp_path, ocpi=self.ocpi)
        return self.running

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.system is not None:
            await self.system.stop()
        self.system = self.session = self.running = None


@pytest_asyncio.fixture
async def cpo_box(tmp_path: Path) -> AsyncIterator[Cpo]:
    box = Cpo(tmp_path)
    try:
        yield box
    finally:
        await box.stop()


async def register(cpo: Running, peer: EmspPeer, role: str | None = None) -> int:
    """The peer registers with a token A granting it its role; returns its peer id here."""
    grant = {**peer.grant, **({"role": role} if role else {})}
    status, body = await cpo.api.post("/api/v1/ocpi/token-a", grant)
    assert status == 201, body
    await peer.register_with(body["versions_url"], body["token"])
    _, peers = await cpo.api.get("/api/v1/ocpi/peers")
    party = f"PT/{peer.party_id}"
    [found] = [p for p in peers["items"] if party in p["granted"]["parties"] and p["active"]]
    return int(found["id"])


async def patch_policy(cpo: Running, peer_id: int, **policy: Any) -> None:
    status, body = await cpo.api.request("PATCH", f"/api/v1/ocpi/peers/{peer_id}", policy)
    assert status == 200, body


async def ours(api: Api) -> dict[str, dict[str, Any]]:
    """Our tariffs as OCPI 2.2.1 objects, by upper-case id."""
    status, body = await api.get("/api/v1/tariffs")
    assert status == 200, body
    return {t["id"].upper(): t for t in body["items"]}


async def held(peer: EmspPeer) -> dict[str, dict[str, Any]]:
    """What the peer holds (accepted by its models), by upper-case id: the last raw body
    that wrote each one."""
    out = {}
    for record in await peer.objects("tariffs"):
        writes = [w for w in record["writes"] if w["action"] != "delete"]
        out[str(record["object"]["id"]).upper()] = writes[-1]["body"]
    return out


async def holds_exactly(cpo: Running, peer: EmspPeer, ids: set[str], timeout: float = WAIT) -> None:
    """Wait until the peer holds exactly these of our tariffs, each as we serve it now."""
    last: dict[str, Any] = {}

    async def probe() -> bool:
        nonlocal last
        current = await ours(cpo.api if isinstance(cpo, Running) else cpo)
        last = await held(peer)
        return set(last) == ids and all(last[i] == current[i] for i in ids)

    try:
        await eventually(probe, f"{peer.party_id} holds exactly {sorted(ids)}", timeout)
    except AssertionError:
        raise AssertionError(f"{peer.party_id} holds {sorted(last)}, not {sorted(ids)}") from None


async def pulled(peer: EmspPeer) -> set[str]:
    """The tariff ids the peer pulls from us (validated by its models)."""
    result = await peer.pull("tariffs")
    assert result["ok"] and not result["validation_errors"], result
    return {str(t["id"]).upper() for t in result["objects"]}


async def tariff_requests(peer: EmspPeer, since: int = 0) -> list[dict[str, Any]]:
    return [
        r
        for r in await peer.requests(path="/tariffs/", since=since)
        if r["method"] in ("PUT", "DELETE")
    ]


async def last_seq(peer: EmspPeer) -> int:
    return max((r["seq"] for r in await peer.requests()), default=0)


@contextlib.asynccontextmanager
async def hung(peer: EmspPeer) -> AsyncIterator[None]:
    """The peer's process stopped (SIGSTOP): it accepts connections and never answers."""
    proc = peer._proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


# ---------------------------------------------------------------------------- tests


async def test_the_peer_holds_exactly_our_tariffs_as_they_change(
    tmp_path: Path, ema: EmspPeer
) -> None:
    configured = {"id": "CFG", **tariff(0.30)}
    box = Cpo(tmp_path, tariffs=[configured])
    try:
        cpo = await box.start()
        assert (await cpo.api.put("/api/v1/tariffs/T1", tariff(0.25)))[0] == 201
        # defined before it registered: pushed when it registers
        await register(cpo, ema)
        await holds_exactly(cpo, ema, {"CFG", "T1"})
        assert (await cpo.api.put("/api/v1/tariffs/T2", tariff(2.0, "FLAT")))[0] == 201
        await holds_exactly(cpo, ema, {"CFG", "T1", "T2"})
        assert (await cpo.api.put("/api/v1/tariffs/T1", tariff(0.27)))[0] == 200  # changed
        await holds_exactly(cpo, ema, {"CFG", "T1", "T2"})
        assert (await held(ema))["T1"]["elements"][0]["price_components"][0]["price"] == 0.27
        assert (await cpo.api.request("DELETE", "/api/v1/tariffs/T1"))[0] == 204
        await holds_exactly(cpo, ema, {"CFG", "T2"})
        assert await pulled(ema) == {"CFG", "T2"}

        # the same tariff again changes nothing: nothing is pushed
        since = await last_seq(ema)
        assert (await cpo.api.put("/api/v1/tariffs/T2", tariff(2.0, "FLAT")))[0] == 200
        assert (await cpo.api.put("/api/v1/tariffs/T3", tariff(0.1)))[0] == 201
        await holds_exactly(cpo, ema, {"CFG", "T2", "T3"})
        assert [
            (r["method"], r["path"].rstrip("/").rsplit("/", 1)[-1])
            for r in await tariff_requests(ema, since)
        ] == [("PUT", "T3")]
        # an id with a space and a "?" (printable ASCII): escaped in the URL
        assert (await cpo.api.put("/api/v1/tariffs/T%20SP%3F", tariff(0.1)))[0] == 201
        await holds_exactly(cpo, ema, {"CFG", "T2", "T3", "T SP?"})
        assert (await cpo.api.request("DELETE", "/api/v1/tariffs/T%20SP%3F"))[0] == 204
        await holds_exactly(cpo, ema, {"CFG", "T2", "T3"})

        # every push: our party in the URL, Base64 token, request ids, routing headers
        requests = await tariff_requests(ema)
        assert {r["method"] for r in requests} == {"PUT", "DELETE"}
        for r in requests:
            assert "/ocpi/emsp/2.2.1/tariffs/PT/CPO/" in r["path"], r["path"]
            assert r["findings"] == [], r
            assert r["response"]["status"] == 200, r
            assert all(h in r["headers"] for h in ROUTING), r["headers"]
            assert r["headers"]["ocpi-to-party-id"] == "EMA"
    finally:
        await box.stop()


async def test_each_peer_sees_exactly_its_prices_pushed_and_pulled(
    cpo_box: Cpo, ema: EmspPeer, emb: EmspPeer
) -> None:
    cpo = await cpo_box.start()
    a = await register(cpo, ema)
    b = await register(cpo, emb)
    for tid, price in (("STD", 0.30), ("A-STD", 0.25), ("B-STD", 0.20)):
        assert (await cpo.api.put(f"/api/v1/tariffs/{tid}", tariff(price)))[0] == 201
    await holds_exactly(cpo, ema, {"STD", "A-STD", "B-STD"})  # (all public so far)

    # each has its own price instead of STD: the replacements are private
    await patch_policy(cpo, a, tariffs={"STD": "A-STD"})
    await patch_policy(cpo, b, tariffs={"STD": "B-STD"})
    await holds_exactly(cpo, ema, {"STD", "A-STD"})
    await holds_exactly(cpo, emb, {"STD", "B-STD"})
    assert await pulled(ema) == {"STD", "A-STD"}
    assert await pulled(emb) == {"STD", "B-STD"}

    # the map changes: A-STD becomes B's price (A loses it), B-STD nobody's (public)
    await patch_policy(cpo, a, tariffs={})
    await patch_policy(cpo, b, tariffs={"STD": "A-STD"})
    await holds_exactly(cpo, ema, {"STD", "B-STD"})
    await holds_exactly(cpo, emb, {"STD", "A-STD", "B-STD"})
    assert await pulled(ema) == {"STD", "B-STD"}
    assert await pulled(emb) == {"STD", "A-STD", "B-STD"}
    # a private tariff's change reaches only its peer
    since_a = await last_seq(ema)
    assert (await cpo.api.put("/api/v1/tariffs/A-STD", tariff(0.24)))[0] == 200
    await holds_exactly(cpo, emb, {"STD", "A-STD", "B-STD"})
    assert await tariff_requests(ema, since_a) == []


async def test_a_failing_peer_gets_what_it_missed_and_delays_no_other(
    tmp_path: Path, ema: EmspPeer, emb: EmspPeer
) -> None:
    box = Cpo(tmp_path, push_timeout=3.0)
    try:
        cpo = await box.start()
        await _failing_peer(box, cpo, ema, emb)
    finally:
        await box.stop()


async def _failing_peer(box: Cpo, cpo: Running, ema: EmspPeer, emb: EmspPeer) -> None:
    a = await register(cpo, ema)
    b = await register(cpo, emb)
    assert (await cpo.api.put("/api/v1/tariffs/T1", tariff(0.25)))[0] == 201
    assert (await cpo.api.put("/api/v1/tariffs/T2", tariff(0.35)))[0] == 201
    await holds_exactly(cpo, ema, {"T1", "T2"})
    await holds_exactly(cpo, emb, {"T1", "T2"})
    assert box.system is not None
    pusher = box.system.extensions[0].bridge.tariff_pusher

    async def a_failed() -> bool:
        return any(j.peer_id == a and j.attempts >= 1 for j in pusher.pending())

    async with hung(ema):
        assert (await cpo.api.put("/api/v1/tariffs/T1", tariff(0.26)))[0] == 200
        assert (await cpo.api.put("/api/v1/tariffs/T3", tariff(0.40)))[0] == 201
        assert (await cpo.api.request("DELETE", "/api/v1/tariffs/T2"))[0] == 204
        # B has it all while A's pushes still wait for an answer (push_timeout 3 s)
        await holds_exactly(cpo, emb, {"T1", "T3"}, timeout=2.0)
        await eventually(a_failed, "A's pushes time out")
    # back: A gets what it missed, retried after its backoff
    await holds_exactly(cpo, ema, {"T1", "T3"})

    async def a_acknowledged() -> bool:  # (what timed out was pushed again, and answered)
        return not [j for j in pusher.pending() if j.peer_id == a]

    await eventually(a_acknowledged, "A acknowledged everything")

    # a suspended peer gets nothing; once resumed, what it missed
    assert (await cpo.api.post(f"/api/v1/ocpi/peers/{b}/suspend"))[0] == 200
    since_b = await last_seq(emb)
    assert (await cpo.api.put("/api/v1/tariffs/T4", tariff(0.50)))[0] == 201
    await holds_exactly(cpo, ema, {"T1", "T3", "T4"})
    assert await tariff_requests(emb, since_b) == []
    assert (await cpo.api.post(f"/api/v1/ocpi/peers/{b}/resume"))[0] == 200
    await holds_exactly(cpo, emb, {"T1", "T3", "T4"})


async def test_a_restart_pushes_what_is_owed_and_nothing_acknowledged_again(
    cpo_box: Cpo, ema: EmspPeer, emb: EmspPeer
) -> None:
    cpo = await cpo_box.start()
    await register(cpo, ema)
    await register(cpo, emb)
    for tid in ("T1", "T2", "T3"):
        assert (await cpo.api.put(f"/api/v1/tariffs/{tid}", tariff(0.25)))[0] == 201
    await holds_exactly(cpo, ema, {"T1", "T2", "T3"})
    await holds_exactly(cpo, emb, {"T1", "T2", "T3"})

    # A hangs: its push of T2's change is never answered before we stop
    async with hung(ema):
        assert (await cpo.api.put("/api/v1/tariffs/T2", tariff(0.29)))[0] == 200
        await holds_exactly(cpo, emb, {"T1", "T2", "T3"})
        # changes the delivery never heard of (as if the process died before it was told)
        assert cpo.system is not None
        store = cpo.system.extensions[0].bridge.store
        assert await store.put_tariff("T4", {"id": "T4", **tariff(0.9)})
        assert await store.delete_tariff("T3")
        await cpo_box.stop()
    # (whatever A now takes of the request it was sent while hanging is not acknowledged)
    await ema.state()
    since = {p.party_id: await last_seq(p) for p in (ema, emb)}

    cpo = await cpo_box.start()
    await holds_exactly(cpo, emb, {"T1", "T2", "T4"})
    await holds_exactly(cpo, ema, {"T1", "T2", "T4"})
    pushed = {
        p.party_id: sorted(
            (r["method"], r["path"].rstrip("/").rsplit("/", 1)[-1])
            for r in await tariff_requests(p, since[p.party_id])
        )
        for p in (ema, emb)
    }
    # B: only what changed while it was told nothing; never T1 (acknowledged, unchanged)
    assert pushed["EMB"] == [("DELETE", "T3"), ("PUT", "T4")], pushed
    # A: the same, and T2's change, which it never acknowledged
    assert pushed["EMA"] == [("DELETE", "T3"), ("PUT", "T2"), ("PUT", "T4")], pushed


async def test_mobie_gets_no_tariffs_pushed_unless_the_operator_adds_them(
    cpo_box: Cpo, ema: EmspPeer
) -> None:
    """MOBI.E's profile (phase 1): tariffs are not changed by CPOs over OCPI, MOBI.E pulls
    them; its phase 2 plans pushes, which the operator may turn on."""
    hub = await start_peer("MOB", role="HUB")
    try:
        cpo = await cpo_box.start()  # (csms's MOBI.E mode: the HUB is MOBI.E)
        h = await register(cpo, hub)
        _, view = await cpo.api.get(f"/api/v1/ocpi/peers/{h}")
        assert view["policy"]["mobie"] and "tariffs" not in view["policy"]["receives"]
        await register(cpo, ema)
        assert (await cpo.api.put("/api/v1/tariffs/T1", tariff(0.25)))[0] == 201
        await holds_exactly(cpo, ema, {"T1"})
        assert await tariff_requests(hub) == []
        assert await held(hub) == {}
        assert await pulled(hub) == {"T1"}

        receives = [*view["policy"]["receives"], "tariffs"]
        await patch_policy(cpo, h, receives=receives)
        await holds_exactly(cpo, hub, {"T1"})
    finally:
        await hub.stop()


async def test_a_change_made_in_the_node_is_pushed_by_its_delivery_process(
    tmp_path: Path, ema: EmspPeer
) -> None:
    """``csms run``: the admin API is in the OCPP node, the pushes in the delivery process
    (which hears of the change through csms's topics)."""
    daemon = Daemon(tmp_path, extra_config=DAEMON_OCPI.format(offline=60))
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as s:
            api = Api(daemon.http_url, s)
            status, body = await api.post("/api/v1/ocpi/token-a", ema.grant)
            assert status == 201, body
            await ema.register_with(body["versions_url"], body["token"])
            assert (await api.put("/api/v1/tariffs/T1", tariff(0.25)))[0] == 201
            await holds_exactly(api, ema, {"T1"})
            assert (await api.put("/api/v1/tariffs/T1", tariff(0.26)))[0] == 200
            assert (await api.put("/api/v1/tariffs/T2", tariff(0.3)))[0] == 201
            await holds_exactly(api, ema, {"T1", "T2"})
            assert (await api.request("DELETE", "/api/v1/tariffs/T1"))[0] == 204
            await holds_exactly(api, ema, {"T2"})
        pushed = [ln for ln in daemon.lines if ln.get("logger") == "ocpi.tariffs"]
        assert pushed and all(ln.get("outcome") == "delivered" for ln in pushed), pushed
    finally:
        assert await daemon.signal(signal.SIGTERM) == 0


async def test_a_peer_on_211_gets_the_211_tariff(cpo_box: Cpo) -> None:
    peer = await EmspPeer(party_id="EMO", country_code="PT", versions=("2.1.1",)).start()
    try:
        cpo = await cpo_box.start()
        status, body = await cpo.api.post("/api/v1/ocpi/token-a", peer.grant)
        assert status == 201, body
        result = await peer.register_with(body["versions_url"], body["token"], version="2.1.1")
        assert result["version"] == "2.1.1", result
        assert (await cpo.api.put("/api/v1/tariffs/T1", tariff(0.25)))[0] == 201
        assert (await cpo.api.put("/api/v1/tariffs/T2", tariff(0.3)))[0] == 201
        assert (await cpo.api.request("DELETE", "/api/v1/tariffs/T2"))[0] == 204

        async def only_t1() -> dict[str, Any]:
            got = await held(peer)
            return got if set(got) == {"T1"} else {}

        got = await eventually(only_t1, "the 2.1.1 peer holds T1 only")
        current = (await ours(cpo.api))["T1"]
        assert got["T1"] == outgoing("tariff", current, "2.1.1")
        assert "country_code" not in got["T1"] and "party_id" not in got["T1"]
        for r in await tariff_requests(peer):
            assert "/ocpi/emsp/2.1.1/tariffs/PT/CPO/" in r["path"], r["path"]
            assert r["response"]["status"] == 200, r
    finally:
        await peer.stop()
