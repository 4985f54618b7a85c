"""Alerts (issue 16, item 10): a station faulted, offline longer than the threshold (and
back), the pushes to the OCPI hub failing; stored, delivered to a real webhook receiver
(HMAC verified, the first deliveries refused and retried with backoff) and a real local
SMTP server; de-duplicated across a restart; the API, the web page, the pure rules."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from charger_sim import Behaviour, Station
from csms.alerts import (
    Presence,
    channels_of,
    fault_transition,
    next_attempt,
    offline_review,
    signature,
    verify,
)
from csms.clock import FakeClock
from csms.config import AlertSettings, ConfigError, load_settings
from ocpi_bridge.push_alerts import PushHealth, push_outcome
from tests.certs import TestPki
from tests.conftest import Running, start_system
from tests.flaky_hub import FlakyHub
from tests.test_push_faults import eventually, register
from tests.test_web import ADMIN, VIEWER, WebClient, web_overrides

SECRET = "webhook-secret-for-tests"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# ---------------------------------------------------------------------- pure rules


def test_fault_transition() -> None:
    assert fault_transition("Faulted", is_open=False) == "open"
    assert fault_transition("Faulted", is_open=True) is None  # a repeat: one alert
    assert fault_transition("Available", is_open=True) == "close"
    assert fault_transition("Available", is_open=False) is None


def test_offline_review() -> None:
    threshold = timedelta(minutes=30)
    fleet = [
        Presence("up", True, NOW - timedelta(hours=3)),  # connected: never offline
        Presence("quiet", False, NOW - timedelta(minutes=29)),
        Presence("gone", False, NOW - timedelta(minutes=30)),
        Presence("never", False, None),  # never seen: nothing to alert about
        Presence("still", False, NOW - timedelta(hours=5)),
        Presence("back", True, NOW - timedelta(hours=5)),
    ]
    went, back = offline_review(fleet, {"still", "back"}, NOW, threshold)
    assert [p.station_id for p in went] == ["gone"]
    assert back == ["back"]


def test_next_attempt_backs_off_with_a_cap_and_gives_up() -> None:
    delays = [
        (next_attempt(n, NOW, 30, 300, 6) - NOW).total_seconds()  # type: ignore[operator]
        for n in range(1, 6)
    ]
    assert delays == [30, 60, 120, 240, 300]
    assert next_attempt(6, NOW, 30, 300, 6) is None
    assert next_attempt(10**6, NOW, 30, 300, 10**7) == NOW + timedelta(seconds=300)


def test_signature_and_replay_window() -> None:
    body, ts = b'{"kind":"test"}', "1772366400"
    header = signature(SECRET.encode(), ts, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify(SECRET.encode(), ts, body, header, now=1772366400 + 10)
    assert not verify(SECRET.encode(), ts, body + b" ", header, now=1772366400)
    assert not verify(b"other", ts, body, header, now=1772366400)
    assert not verify(SECRET.encode(), ts, body, header, now=1772366400 + 301)  # replayed
    assert not verify(SECRET.encode(), "soon", body, header, now=1772366400)


def test_push_outcome() -> None:
    s, action = push_outcome(PushHealth(), True, NOW, 10, 3)
    assert action == "recover" and not s.maybe_open  # (closes an outage from before a start)
    s, action = push_outcome(s, True, NOW, 10, 3)
    assert action is None
    for minute in (0, 5, 9):
        s, action = push_outcome(s, False, NOW + timedelta(minutes=minute), 10, 3)
        assert action is None  # three failures, but not for 10 minutes yet
    s, action = push_outcome(s, False, NOW + timedelta(minutes=10), 10, 3)
    assert action == "raise" and s.failures == 4
    s, action = push_outcome(s, False, NOW + timedelta(minutes=20), 10, 3)
    assert action is None  # once per outage
    s, action = push_outcome(s, True, NOW + timedelta(minutes=21), 10, 3)
    assert action == "recover" and s == PushHealth(maybe_open=False)


def test_alert_configuration(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[alerts]\nwebhook_secret = "x"\n')
    with pytest.raises(ConfigError, match=r"alerts\.webhook_secret"):
        load_settings(path, {})
    path.write_text('[alerts]\nsmtp_password = "x"\n')
    with pytest.raises(ConfigError, match=r"alerts\.smtp_password"):
        load_settings(path, {})
    path.write_text('[alerts]\nwebhook_urls = ["ftp://x"]\n')
    with pytest.raises(ConfigError, match=r"alerts\.webhook_urls"):
        load_settings(path, {})
    path.write_text('[alerts]\nsmtp_host = "mail"\n')
    with pytest.raises(ConfigError, match=r"alerts\.smtp_from"):
        load_settings(path, {})
    path.write_text(
        '[alerts]\nwebhook_urls = ["https://a/h", "https://b/h"]\nsmtp_host = "m"\n'
        'smtp_from = "csms@x.pt"\nsmtp_to = ["ops@x.pt"]\n'
    )
    env = {"CSMS_ALERTS__WEBHOOK_SECRET": "123456", "CSMS_ALERTS__SMTP_PASSWORD": "true"}
    a = load_settings(path, env).alerts
    assert a.webhook_secret is not None and a.webhook_secret.get_secret_value() == "123456"
    assert a.smtp_password is not None and a.smtp_password.get_secret_value() == "true"
    assert "123456" not in repr(a)
    assert channels_of(a) == ["webhook:0", "webhook:1", "email"]
    assert channels_of(AlertSettings()) == []


# ---------------------------------------------------------------------- real receivers


class Receiver:
    """A webhook receiver on 127.0.0.1 that checks the signature as the README says, and
    refuses the first ``fail_first`` deliveries with a 500."""

    def __init__(self, clock: FakeClock | None = None, fail_first: int = 0) -> None:
        self.clock = clock
        self.fail_first = fail_first
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.refused = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = (self.clock.now() if self.clock else datetime.now(UTC)).timestamp()
        ts = request.headers.get("X-Csms-Timestamp", "")
        sig = request.headers.get("X-Csms-Signature", "")
        if not verify(SECRET.encode(), ts, body, sig, now=now):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.fail_first > 0:
            self.fail_first -= 1
            self.refused += 1
            return web.Response(status=500)
        self.received.append(json.loads(body))
        return web.Response(status=204)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class SmtpSink:
    """A real SMTP server (aiosmtpd) on 127.0.0.1, keeping each message it accepts; with
    ``tls``, it requires STARTTLS and a login (user ``csms``, password ``mail-pw``)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.messages: list[bytes] = []
        self.logins: list[str] = []
        self.port = _free_port()
        sink = self

        class Keep:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.messages.append(envelope.original_content)
                return "250 queued"

        def login(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
            ok = auth.login == b"csms" and auth.password == b"mail-pw"
            if ok:
                sink.logins.append(auth.login.decode())
            return AuthResult(success=ok)

        extra: dict[str, Any] = {}
        if tls is not None:
            extra = {
                "tls_context": tls,
                "require_starttls": True,
                "auth_required": True,
                "auth_require_tls": True,
                "authenticator": login,
            }
        self.controller = Controller(Keep(), hostname="127.0.0.1", port=self.port, **extra)

    async def __aenter__(self) -> SmtpSink:
        await asyncio.to_thread(self.controller.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.controller.stop)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sim(station_id: str, url: str) -> Station:
    return Station(
        station_id,
        url,
        1,
        behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False),
    )


async def alerts_of(cpo: Running, query: str = "") -> list[dict[str, Any]]:
    status, page = await cpo.api.get(f"/api/v1/alerts?limit=1000&{query}")
    assert status == 200, page
    return page["items"]


def kinds(items: list[dict[str, Any]]) -> list[str]:
    return [a["kind"] for a in items]


# ---------------------------------------------------------------------- end to end


async def test_fault_alert_delivered_signed_and_retried(tmp_path: Path) -> None:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    async with Receiver(clock, fail_first=2) as hook:
        system, session, cpo = await start_system(
            tmp_path,
            clock=clock,
            ALERTS__WEBHOOK_URLS=f'["{hook.url}"]',
            ALERTS__WEBHOOK_SECRET=SECRET,
            ALERTS__RETRY_BASE_SECONDS="10",
            ALERTS__RETRY_MAX_SECONDS="15",
        )
        system.alerts.poll_seconds = 0.02
        st = sim("F1", "")
        try:
            await cpo.define_station("F1", 1)
            st = sim("F1", cpo.ocpp_url)
            await st.connect()
            await st.boot_and_report()
            await st.status(1, "Faulted", error_code="GroundFailure", info="earth leak")

            async def tried(n: int) -> bool:
                items = await alerts_of(cpo, "kind=faulted")
                return bool(items) and items[0]["deliveries"][0]["attempts"] == n

            await eventually(lambda: tried(1))
            (alert,) = await alerts_of(cpo, "kind=faulted")
            d = alert["deliveries"][0]
            assert d["channel"] == "webhook:0" and d["state"] == "pending"
            assert d["last_error"] == "HTTP 500" and hook.refused == 1
            due = datetime.fromisoformat(d["next_attempt_at"].replace("Z", "+00:00"))
            assert due - clock.now() == timedelta(seconds=10)
            await clock.advance(10)
            await eventually(lambda: tried(2))
            (alert,) = await alerts_of(cpo, "kind=faulted")
            due = datetime.fromisoformat(
                alert["deliveries"][0]["next_attempt_at"].replace("Z", "+00:00")
            )
            assert due - clock.now() == timedelta(seconds=15)  # 20 s, capped
            await clock.advance(15)
            await eventually(lambda: tried(3))
            (alert,) = await alerts_of(cpo, "kind=faulted")
            assert alert["deliveries"][0]["state"] == "delivered"
            assert alert["deliveries"][0]["next_attempt_at"] is None
            assert hook.bad_signatures == 0 and len(hook.received) == 1
            msg = hook.received[0]
            assert msg["id"] == alert["id"] and msg["kind"] == "faulted"
            assert msg["subject"] == "F1"
            assert msg["details"]["error_code"] == "GroundFailure"
            assert msg["details"]["connector_id"] == 1

            # the same fault again: no second alert; its end: "fault_cleared"
            await st.status(1, "Faulted", error_code="GroundFailure")
            await st.status(1, "Available")
            await eventually(lambda: _has(cpo, "fault_cleared"))
            assert kinds(await alerts_of(cpo, "subject=F1")) == ["fault_cleared", "faulted"]
            await eventually(lambda: len(hook.received) == 2)
            assert hook.received[1]["kind"] == "fault_cleared"

            # metrics: raised by kind, failed deliveries
            async with session.get(cpo.http_url + "/metrics") as r:
                text = await r.text()
            assert 'csms_alerts_raised_total{kind="faulted"} 1.0' in text
            assert 'csms_alert_deliveries_total{channel="webhook",outcome="failed"} 2.0' in text
        finally:
            await st.disconnect()
            await session.close()
            await system.stop()


async def _has(cpo: Running, kind: str, n: int = 1) -> bool:
    return len(await alerts_of(cpo, f"kind={kind}")) >= n


async def test_offline_alert_once_per_outage_across_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    overrides = {"ALERTS__OFFLINE_MINUTES": "5", "ALERTS__CHECK_SECONDS": "60"}
    system, session, cpo = await start_system(tmp_path, clock=clock, **overrides)
    try:
        await cpo.define_station("O1", 1)
        st = sim("O1", cpo.ocpp_url)
        await st.connect()
        await st.boot_and_report()
        await st.disconnect()
        await eventually(lambda: not system.registry.is_connected("O1"))
        await clock.advance(4 * 60)
        await system.alerts.check_offline()
        assert await alerts_of(cpo) == []  # 4 minutes: not yet
        await clock.advance(2 * 60)  # the checker's round (every 60 s) finds it
        await eventually(lambda: _has(cpo, "offline"))
        (alert,) = await alerts_of(cpo)
        assert alert["subject"] == "O1" and alert["details"]["offline_minutes"] == 5
        assert alert["deliveries"] == []  # (no channel configured: listed all the same)
        await clock.advance(10 * 60)
        await system.alerts.check_offline()
        assert kinds(await alerts_of(cpo)) == ["offline"]
    finally:
        await session.close()
        await system.stop()

    # a restart: the outage is still the same one
    clock = FakeClock(clock.now() + timedelta(minutes=30))
    system, session, cpo = await start_system(tmp_path, clock=clock, **overrides)
    st = sim("O1", cpo.ocpp_url)
    try:
        await system.alerts.check_offline()
        assert kinds(await alerts_of(cpo)) == ["offline"]
        await st.connect()
        await st.boot_and_report()
        await eventually(lambda: _has(cpo, "recovered"))
        assert kinds(await alerts_of(cpo)) == ["recovered", "offline"]
        (back,) = await alerts_of(cpo, "kind=recovered")
        assert back["subject"] == "O1" and back["details"]["offline_alert_at"]
        # and a new outage is a new alert
        await st.disconnect()
        await eventually(lambda: not system.registry.is_connected("O1"))
        await clock.advance(6 * 60)
        await eventually(lambda: _has(cpo, "offline", 2))
    finally:
        await st.disconnect()
        await session.close()
        await system.stop()


async def test_push_failing_alert_from_the_ocpi_bridge(tmp_path: Path) -> None:
    ocpi = {"offline_after": 30, "push_timeout": 0.5, "retry_max_seconds": 1}
    async with Receiver() as hook:
        system, session, cpo = await start_system(
            tmp_path,
            ocpi=ocpi,
            ALERTS__WEBHOOK_URLS=f'["{hook.url}"]',
            ALERTS__WEBHOOK_SECRET=SECRET,
            ALERTS__PUSH_FAILING_MINUTES="0",
            ALERTS__PUSH_FAILING_ATTEMPTS="3",
        )
        system.alerts.poll_seconds = 0.05
        st = sim("P1", "")
        try:
            async with FlakyHub() as hub:
                await register(hub, cpo.http_url, cpo.api)
                hub.mode = "error500"  # the hub is down
                await cpo.define_station("P1", 1)
                st = sim("P1", cpo.ocpp_url)
                await st.connect()
                await st.boot_and_report()
                await eventually(lambda: _has(cpo, "push_failing"), timeout=20)
                (alert,) = await alerts_of(cpo, "kind=push_failing")
                assert alert["subject"].startswith("peer:")
                assert alert["details"]["failures"] >= 3
                await eventually(lambda: any(m["kind"] == "push_failing" for m in hook.received))
                hub.mode = "ok"  # back: one "push_recovered"
                await eventually(lambda: _has(cpo, "push_recovered"), timeout=20)
                assert kinds(await alerts_of(cpo, "kind=push_failing")) == ["push_failing"]
                assert hook.bad_signatures == 0
        finally:
            await st.disconnect()
            await session.close()
            await system.stop()


async def test_test_alert_by_email_and_the_api(tmp_path: Path) -> None:
    async with SmtpSink() as smtp:
        system, session, cpo = await start_system(
            tmp_path,
            ALERTS__SMTP_HOST='"127.0.0.1"',
            ALERTS__SMTP_PORT=str(smtp.port),
            ALERTS__SMTP_FROM='"csms@cpo.example.pt"',
            ALERTS__SMTP_TO='["ops@cpo.example.pt"]',
            ALERTS__SMTP_STARTTLS="false",
        )
        system.alerts.poll_seconds = 0.05
        try:
            status, alert = await cpo.api.post("/api/v1/alerts/test")
            assert status == 202, alert
            assert alert["kind"] == "test" and alert["deliveries"][0]["channel"] == "email"
            await eventually(lambda: smtp.messages)
            mail = smtp.messages[0].decode()
            assert "Subject: [csms] test: csms" in mail and "ops@cpo.example.pt" in mail

            async def delivered() -> bool:
                _, one = await cpo.api.get(f"/api/v1/alerts/{alert['id']}")
                return one["deliveries"][0]["state"] == "delivered"

            await eventually(delivered)
            # the API's refusals
            for path, code in (
                ("/api/v1/alerts/999", 404),
                ("/api/v1/alerts/x", 404),
                ("/api/v1/alerts?kind=nope", 400),
                ("/api/v1/alerts?limit=0", 400),
                ("/api/v1/alerts?subject=" + "x" * 201, 400),
            ):
                got, body = await cpo.api.get(path)
                assert got == code and body["status"] == "error", path
            got, _ = await cpo.api.get("/api/v1/alerts", auth=False)
            assert got == 401
            got, _ = await cpo.api.post("/api/v1/alerts/test", auth=False)
            assert got == 401
            await cpo.api.post("/api/v1/alerts/test")
            status, page = await cpo.api.get("/api/v1/alerts?limit=1&offset=1")
            assert page["total"] == 2 and [a["id"] for a in page["items"]] == [alert["id"]]
        finally:
            await session.close()
            await system.stop()


async def test_alerts_web_page(tmp_path: Path) -> None:
    system, session, cpo = await start_system(tmp_path, **web_overrides())
    admin, viewer = WebClient(cpo.http_url), WebClient(cpo.http_url)
    try:
        assert (await admin.login(ADMIN)).status == 303
        assert (await viewer.login(VIEWER)).status == 303
        assert (await viewer.get("/alerts"))[0] == 403
        status, page = await admin.get("/alerts")
        assert status == 200 and 'id="alerts-table"' in page and 'href="/alerts"' in page
        status, _, _ = await admin.post("/alerts/test", {}, csrf=False)
        assert status == 403
        status, _, headers = await viewer.post("/alerts/test", {})
        assert status == 403
        status, _, headers = await admin.post("/alerts/test", {})
        assert status == 303 and headers["Location"] == "/alerts"
        _, page = await admin.get("/alerts")
        assert 'data-kind="test"' in page and 'id="alerts-flash"' in page
        _, page = await admin.get("/alerts?kind=offline")
        assert 'data-kind="test"' not in page
        status, page = await admin.get("/alerts?kind=<script>&page=abc")
        assert status == 200 and "&lt;script&gt;" not in page
    finally:
        await admin.close()
        await viewer.close()
        await session.close()
        await system.stop()


async def test_email_over_starttls_with_a_login(tmp_path: Path) -> None:
    """The relay an operator usually has: STARTTLS required (its certificate verified with
    tls.ca_file), then a login with the password from the environment."""
    (tmp_path / "pki").mkdir()
    pki = TestPki(tmp_path / "pki")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pki.server.cert, pki.server.key)
    async with SmtpSink(tls=server_tls) as smtp:
        system, session, cpo = await start_system(
            tmp_path,
            ALERTS__SMTP_HOST='"127.0.0.1"',
            ALERTS__SMTP_PORT=str(smtp.port),
            ALERTS__SMTP_FROM='"csms@cpo.example.pt"',
            ALERTS__SMTP_TO='["ops@cpo.example.pt"]',
            ALERTS__SMTP_STARTTLS="true",
            ALERTS__SMTP_USER='"csms"',
            ALERTS__SMTP_PASSWORD="mail-pw",
            TLS__CA_FILE=f'"{pki.ca.cert}"',
        )
        system.alerts.poll_seconds = 0.05
        try:
            status, alert = await cpo.api.post("/api/v1/alerts/test")
            assert status == 202, alert
            await eventually(lambda: smtp.messages)
            assert smtp.logins == ["csms"]
            assert b"Subject: [csms] test: csms" in smtp.messages[0]
        finally:
            await session.close()
            await system.stop()
