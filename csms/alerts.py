"""Alerts: a webhook (and an e-mail when SMTP is configured) when a station faults, stays
offline longer than a threshold, or the pushes to an OCPI peer keep failing.

Pure core (facts and ``now`` in, decisions out; unit-tested): :func:`fault_transition`,
:func:`offline_review`, :func:`next_attempt`, :func:`signature` / :func:`verify` (a peer's
failing pushes are the OCPI bridge's rule: ocpi_bridge/push_alerts.py, raised through
``CsmsPort.raise_alert``). The shell (:class:`AlertService`) hears StatusChanged and
StationConnected on the event bus, checks last-seen times every ``alerts.check_seconds`` of
the injected clock, stores each alert with one delivery per channel (csms.repositories.alerts)
and delivers them with exponential backoff and a cap, across restarts.

A condition (a station offline, a connector faulted, a peer's pushes failing) is stored while
it lasts: one alert when it starts, a ``recovered`` one when it ends, never twice for the
same outage, even across restarts or from two processes.

Webhooks are POSTed JSON with ``X-Csms-Timestamp`` (Unix seconds) and ``X-Csms-Signature:
sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with alerts.webhook_secret>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import smtplib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from .api_common import page_response, paging
from .clock import Clock
from .commands import ConnectionRegistry
from .config import AlertSettings
from .events import EventBus, StationConnected, StatusChanged
from .http import ApiError, dumps, json_response
from .openapi import INT, PAGING, STR, Param, array, obj, ok, operation
from .repositories.alerts import AlertRepository
from .repositories.rows import json_or
from .timeparse import from_db, to_iso
from .tls import client_context

log = structlog.get_logger("csms.alerts")

KINDS = (
    "faulted",
    "fault_cleared",
    "offline",
    "recovered",
    "push_failing",
    "push_recovered",
    "test",
)
# the replay window a receiver should allow (documented; used by verify())
REPLAY_WINDOW_SECONDS = 300
# deliveries tried per round; how long one is held while it is tried
BATCH = 50
LEASE = timedelta(minutes=2)
# the worker looks for work at least this often (real seconds; alerts another process
# stored, the OCPI delivery's, have no wake-up here)
POLL_SECONDS = 1.0
MAX_ERROR = 500
MAX_DETAILS = 4000


# ---------------------------------------------------------------------------- pure core


def fault_transition(status: str, is_open: bool) -> str | None:
    """A StatusNotification against the connector's open fault: "open" (alert), "close"
    (it recovered), or None (nothing new: a repeat, or not a fault)."""
    if status == "Faulted":
        return None if is_open else "open"
    return "close" if is_open else None


@dataclass(frozen=True, slots=True)
class Presence:
    station_id: str
    connected: bool
    last_seen: datetime | None


def offline_review(
    stations: Iterable[Presence], open_ids: set[str], now: datetime, threshold: timedelta
) -> tuple[list[Presence], list[str]]:
    """Which stations went offline for longer than ``threshold`` (to alert: not connected,
    seen once, not seen since ``now - threshold``, not already alerted) and which of those
    alerted are back (connected, or seen since)."""
    went, back = [], []
    for s in stations:
        gone = not s.connected and s.last_seen is not None and now - s.last_seen >= threshold
        if gone and s.station_id not in open_ids:
            went.append(s)
        elif not gone and s.station_id in open_ids and (s.connected or s.last_seen is not None):
            back.append(s.station_id)
    return went, back


def next_attempt(
    attempts: int, now: datetime, base: float, cap: float, max_attempts: int
) -> datetime | None:
    """When to try again after ``attempts`` failed tries (base * 2^(attempts-1), at most
    ``cap`` seconds); None once ``max_attempts`` were made (given up)."""
    if attempts >= max_attempts:
        return None
    delay = min(cap, base * 2 ** min(max(attempts - 1, 0), 40))
    return now + timedelta(seconds=delay)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Csms-Signature`` value: ``sha256=`` and the hex HMAC of ``timestamp.body``."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: bytes,
    timestamp: str,
    body: bytes,
    header: str,
    now: float,
    window: float = REPLAY_WINDOW_SECONDS,
) -> bool:
    """What a receiver checks: the signature matches and the timestamp is within the
    replay window of its own clock (``now``, Unix seconds)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > window:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)


def channels_of(settings: AlertSettings) -> list[str]:
    out = [f"webhook:{i}" for i in range(len(settings.webhook_urls))]
    if settings.smtp_host:
        out.append("email")
    return out


def bounded_details(details: dict[str, Any]) -> dict[str, Any]:
    """Details as given, unless absurdly long (a hostile value): then cut, as text."""
    text = dumps(details)
    if len(text) <= MAX_DETAILS:
        return details
    return {"truncated": text[:MAX_DETAILS]}


ALERT = obj(
    {
        "id": INT,
        "kind": {"type": "string", "enum": list(KINDS)},
        "subject": STR,
        "created_at": STR,
        "details": obj(),
        "deliveries": array(
            obj(
                {
                    "channel": STR,
                    "state": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                    "attempts": INT,
                    "next_attempt_at": {"type": ["string", "null"]},
                    "last_error": {"type": ["string", "null"]},
                    "delivered_at": {"type": ["string", "null"]},
                }
            )
        ),
    },
    description="an alert and its delivery per channel (webhook:<n>, email)",
)

# ---------------------------------------------------------------------------- the shell


class DeliveryFailed(Exception):
    """A channel refused an alert (the message is what is kept as its last error)."""


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.raised = Counter(
            "csms_alerts_raised", "Alerts raised, by kind", ["kind"], registry=registry
        )
        self.deliveries = Counter(
            "csms_alert_deliveries",
            "Alert delivery attempts, by channel kind and outcome (ok, failed, gave_up)",
            ["channel", "outcome"],
            registry=registry,
        )


class AlertService:
    """Raises, stores and delivers alerts; its routes are the API's /api/v1/alerts."""

    def __init__(
        self,
        settings: AlertSettings,
        repo: AlertRepository,
        clock: Clock,
        bus: EventBus,
        registry: ConnectionRegistry,
        stations: Any,
        metrics_registry: CollectorRegistry,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.clock = clock
        self.bus = bus
        self.registry = registry
        self.stations = stations  # csms.repositories.stations.StationRepository
        self.metrics = AlertMetrics(metrics_registry)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.poll_seconds = POLL_SECONDS

    # ------------------------------------------------------------------ raising

    async def raise_alert(
        self,
        kind: str,
        subject: str,
        details: dict[str, Any],
        *,
        open_key: str | None = None,
        close_key: str | None = None,
    ) -> int | None:
        """Store an alert (see AlertRepository.raise_alert); its id, None for a duplicate."""
        alert_id = await self.repo.raise_alert(
            kind,
            subject[:200],
            bounded_details(details),
            channels_of(self.settings),
            open_key=open_key,
            close_key=close_key,
        )
        if alert_id is not None:
            self.metrics.raised.labels(kind).inc()
            log.warning("alert raised", alert_id=alert_id, kind=kind, subject=subject)
            self._wake.set()
        return alert_id

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._sub = self.bus.subscribe(
            "alerts", maxsize=10_000, kinds=(StatusChanged, StationConnected)
        )
        self._tasks = [
            asyncio.create_task(self._events(), name="alerts-events"),
            asyncio.create_task(self._offline_loop(), name="alerts-offline"),
            asyncio.create_task(self._deliver_loop(), name="alerts-delivery"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        if getattr(self, "_sub", None) is not None:
            self.bus.unsubscribe(self._sub)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ triggers

    async def _events(self) -> None:
        while True:
            event = await self._sub.get()
            try:
                if isinstance(event, StatusChanged):
                    await self.on_status(event)
                elif isinstance(event, StationConnected):
                    await self.on_connected(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert rule failed on an event")

    async def on_status(self, e: StatusChanged) -> None:
        key = f"faulted:{e.station_id}:{e.connector_id}"
        decision = fault_transition(e.status, await self.repo.is_open(key))
        details = {
            "station_id": e.station_id,
            "connector_id": e.connector_id,
            "status": e.status,
            "error_code": e.error_code,
            "info": e.info,
            "timestamp": to_iso(e.timestamp),
        }
        if decision == "open":
            await self.raise_alert("faulted", e.station_id, details, open_key=key)
        elif decision == "close":
            await self.raise_alert("fault_cleared", e.station_id, details, close_key=key)

    async def on_connected(self, e: StationConnected) -> None:
        """A station that was alerted offline is back: "recovered" (once)."""
        key = f"offline:{e.station_id}"
        conditions = await self.repo.open_conditions("offline", key)
        if key not in conditions:
            return
        opened = conditions[key]["opened_at"]
        details = {"station_id": e.station_id, "offline_alert_at": _iso(opened)}
        await self.raise_alert("recovered", e.station_id, details, close_key=key)

    async def _offline_loop(self) -> None:
        every = timedelta(seconds=self.settings.check_seconds)
        next_at = self.clock.now()
        while True:
            try:
                await self.check_offline()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("offline check failed")
            # on a schedule: a round that fell due while this one ran comes at once
            next_at = next_at + every
            if next_at < self.clock.now():
                next_at = self.clock.now()
            await self.clock.sleep_until(next_at)

    async def check_offline(self) -> None:
        now = self.clock.now()
        rows = await self.stations.db.read(
            "SELECT id, last_seen_at FROM stations WHERE defined = 1 AND retired_at IS NULL "
            "ORDER BY id LIMIT 200000"
        )
        presence = []
        for r in rows:
            seen = self.stations.last_seen(r["id"]) or from_db(r["last_seen_at"])
            presence.append(Presence(r["id"], self.registry.is_connected(r["id"]), seen))
        conditions = await self.repo.open_conditions("offline")
        open_ids = {c["subject"] for c in conditions.values()}
        threshold = timedelta(minutes=self.settings.offline_minutes)
        went, back = offline_review(presence, open_ids, now, threshold)
        for p in went:
            details = {
                "station_id": p.station_id,
                "last_seen": to_iso(p.last_seen) if p.last_seen else None,
                "offline_minutes": self.settings.offline_minutes,
            }
            await self.raise_alert(
                "offline", p.station_id, details, open_key=f"offline:{p.station_id}"
            )
        for sid in back:
            opened = conditions.get(f"offline:{sid}", {}).get("opened_at")
            details = {
                "station_id": sid,
                "offline_alert_at": to_iso(from_db(opened)) if opened else None,
            }
            await self.raise_alert("recovered", sid, details, close_key=f"offline:{sid}")

    # ------------------------------------------------------------------ delivery

    async def _deliver_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert delivery round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def deliver_due(self) -> int:
        """Try every delivery due now; how many were tried."""
        now = self.clock.now()
        due = await self.repo.due(now, BATCH)
        tried = 0
        for d in due:
            if not await self.repo.lease(int(d["id"]), now, now + LEASE):
                continue
            tried += 1
            await self._try(d)
        return tried

    async def _try(self, d: dict[str, Any]) -> None:
        channel = d["channel"]
        message = {
            "id": int(d["alert_id"]),
            "kind": d["kind"],
            "subject": d["subject"],
            "created_at": _iso(d["created_at"]),
            "details": json_or(d["details"], {}),
        }
        error: str | None = None
        try:
            if channel.startswith("webhook:"):
                await self._webhook(int(channel.split(":", 1)[1]), message)
            elif channel == "email":
                await self._email(message)
            else:
                error = f"unknown channel {channel}"
        except asyncio.CancelledError:
            raise
        except DeliveryFailed as e:
            error = str(e)[:MAX_ERROR]
        except Exception as e:
            error = (f"{type(e).__name__}: {e}")[:MAX_ERROR]
        attempts = int(d["attempts"]) + 1
        kind = channel.split(":", 1)[0]
        if error is None:
            await self.repo.attempted(int(d["id"]), "delivered", attempts, None, None)
            self.metrics.deliveries.labels(kind, "ok").inc()
            log.info("alert delivered", alert_id=message["id"], channel=channel)
            return
        s = self.settings
        at = next_attempt(
            attempts, self.clock.now(), s.retry_base_seconds, s.retry_max_seconds, s.max_attempts
        )
        state = "pending" if at is not None else "failed"
        await self.repo.attempted(int(d["id"]), state, attempts, at, error)
        self.metrics.deliveries.labels(kind, "failed" if at else "gave_up").inc()
        log.warning(
            "alert delivery failed",
            alert_id=message["id"],
            channel=channel,
            attempts=attempts,
            error=error,
            next_attempt_at=to_iso(at) if at else None,
        )

    async def _webhook(self, index: int, message: dict[str, Any]) -> None:
        urls = self.settings.webhook_urls
        if index >= len(urls):
            raise DeliveryFailed("that webhook is no longer configured")
        url = urls[index]
        body = dumps(message).encode()
        timestamp = str(int(self.clock.now().timestamp()))
        headers = {"Content-Type": "application/json", "X-Csms-Timestamp": timestamp}
        secret = self.settings.webhook_secret
        if secret is not None:
            headers["X-Csms-Signature"] = signature(
                secret.get_secret_value().encode(), timestamp, body
            )
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout)
        ssl_ctx = client_context() if url.startswith("https://") else None
        async with self._session.post(
            url, data=body, headers=headers, timeout=timeout, ssl=ssl_ctx, allow_redirects=False
        ) as r:
            await r.content.read(4096)
            if not 200 <= r.status < 300:
                raise DeliveryFailed(f"HTTP {r.status}")

    async def _email(self, message: dict[str, Any]) -> None:
        s = self.settings
        mail = EmailMessage()
        mail["Subject"] = f"[csms] {message['kind']}: {message['subject']}"
        mail["From"] = s.smtp_from or ""
        mail["To"] = ", ".join(s.smtp_to)
        mail.set_content(json.dumps(message, indent=2, ensure_ascii=False))

        def send() -> None:
            assert s.smtp_host is not None
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout) as smtp:
                if s.smtp_starttls:
                    smtp.starttls(context=client_context())  # (tls.ca_file too)
                if s.smtp_user:
                    password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                    smtp.login(s.smtp_user, password)
                smtp.send_message(mail)

        await asyncio.to_thread(send)

    # ------------------------------------------------------------------ API

    def api_routes(self) -> list[web.RouteDef]:
        p = "/api/v1"
        return [
            web.get(f"{p}/alerts", self.api_list),
            web.post(f"{p}/alerts/test", self.api_test),
            web.get(f"{p}/alerts/{{alert_id:\\d+}}", self.api_get),
        ]

    @staticmethod
    def view(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": int(row["id"]),
            "kind": row["kind"],
            "subject": row["subject"],
            "created_at": _iso(row["created_at"]),
            "details": row["details"],
            "deliveries": [
                {
                    "channel": d["channel"],
                    "state": d["state"],
                    "attempts": int(d["attempts"]),
                    "next_attempt_at": _iso(d["next_attempt_at"])
                    if d["state"] == "pending"
                    else None,
                    "last_error": d["last_error"],
                    "delivered_at": _iso(d["delivered_at"]),
                }
                for d in row["deliveries"]
            ],
        }

    @operation(
        "The alerts, newest first",
        tag="alerts",
        query=(
            *PAGING,
            Param("kind", {"type": "string", "enum": list(KINDS)}, "only this kind"),
            Param("subject", {"type": "string", "maxLength": 200}, "a station id, peer:<id>"),
        ),
        responses={
            200: ok(
                "a page of them",
                obj({"items": array(ALERT), "total": INT, "limit": INT, "offset": INT}),
            )
        },
    )
    async def api_list(self, request: web.Request) -> web.Response:
        limit, offset = paging(request)
        kind = request.query.get("kind") or None
        if kind is not None and kind not in KINDS:
            raise ApiError(400, "invalid_query", f"kind is one of {', '.join(KINDS)}")
        subject = request.query.get("subject") or None
        if subject is not None and len(subject) > 200:
            raise ApiError(400, "invalid_query", "subject is at most 200 characters")
        rows, total = await self.repo.page(kind, subject, limit, offset)
        return page_response([self.view(r) for r in rows], total, limit, offset)

    @operation(
        "An alert and its deliveries",
        tag="alerts",
        path={"alert_id": {"type": "integer", "minimum": 1}},
        responses={200: ok("the alert", ALERT)},
    )
    async def api_get(self, request: web.Request) -> web.Response:
        try:
            alert_id = int(request.match_info["alert_id"])
        except ValueError:
            raise ApiError(404, "not_found", "an alert id is an integer") from None
        row = await self.repo.get(alert_id) if 1 <= alert_id < 1 << 62 else None
        if row is None:
            raise ApiError(404, "not_found", f"no alert {alert_id}")
        return json_response(self.view(row))

    @operation(
        "Send a test alert to every channel",
        tag="alerts",
        responses={202: ok("the test alert, to be delivered", ALERT)},
    )
    async def api_test(self, request: web.Request) -> web.Response:
        """Raise a test alert (each channel gets it); 202 with the alert."""
        if request.can_read_body and request.content_length not in (None, 0):
            # (a body is not needed; a large one is refused by the app's size limit)
            await request.read()
        alert_id = await self.raise_alert(
            "test", "csms", {"message": "a test alert, sent on request"}
        )
        assert alert_id is not None
        row = await self.repo.get(alert_id)
        assert row is not None
        return json_response(self.view(row), status=202)


def _iso(text: str | None) -> str | None:
    value = from_db(text)
    return to_iso(value) if value else None
