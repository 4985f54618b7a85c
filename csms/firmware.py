"""Firmware campaigns: one firmware image sent with ``UpdateFirmware`` to a set of stations,
in waves, followed to the new version at the next boot.

- **Core** (pure: facts and ``now`` in, decisions out): :func:`window_open` (the campaign's
  dates and daily window in the operator's time zone), :func:`plan` (which stations time
  out, fail, are retried, are already done, which get UpdateFirmware now, whether the
  campaign is over), :func:`after_status` (a FirmwareStatusNotification) and
  :func:`after_boot` (a BootNotification with its firmwareVersion).
- **Shell** (:class:`FirmwareService`): the images (uploaded to ``<data_dir>/firmware/``
  with a size limit and a SHA-256, or a URL), the campaigns in the database (a restarted
  csms continues them), a scheduler task on the injected clock, the per-station download
  URLs ``/downloads/firmware/{token}`` (a token per attempt, expiring, downloads counted),
  the API and the metric ``csms_firmware_campaign_stations{state}``.

A station counts as done when it boots with the target version (or, when the campaign has
no target version, when it sent Installed and booted); a failure (DownloadFailed,
InstallationFailed, a refused or unanswered UpdateFirmware, a boot with another version
after installing, no progress within ``station_timeout``) is retried ``retry_interval``
later until ``max_attempts`` attempts were made; then the station has failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from aiohttp import web
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .api_common import paging
from .commands import CommandError, CommandPort, ConnectionRegistry
from .handlers import Services
from .http import ApiError, JsonBodyError, json_response, read_json
from .openapi import INT, PAGING, STR, Param, array, fails, list_of, obj, ok, operation
from .openapi import page_of as _page_of
from .repositories.firmware import ACTIVE, TERMINAL, FirmwareRepository
from .tasks import Background
from .timeparse import from_db, parse_api_time, to_iso, to_ocpp
from .uploads import UploadTooLarge, download_response, part_chunks, write_chunks
from .web.auth import same_token

if TYPE_CHECKING:
    from .connection import StationConnection

log = structlog.get_logger("csms.firmware")

MAX_CAMPAIGN_STATIONS = 10_000
MAX_RUNNING_CAMPAIGNS = 100
# UpdateFirmware's retryInterval (seconds between a station's own download attempts)
DOWNLOAD_RETRY_INTERVAL = 30
STATES = ("pending", "retry", *ACTIVE, *TERMINAL)
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,100}$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_STATION_ID = re.compile(r"^[^\x00-\x1f/]{1,255}$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_VERSION_MAX = 50  # (BootNotification's firmwareVersion is CiString50)


# ---------------------------------------------------------------------- the core


@dataclass(frozen=True)
class Policy:
    """How a campaign is run."""

    max_concurrent: int = 10
    max_attempts: int = 3
    retry_after: timedelta = timedelta(minutes=10)
    station_timeout: timedelta = timedelta(hours=1)
    window_start: time | None = None
    window_end: time | None = None
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Lisbon"))
    not_before: datetime | None = None
    not_after: datetime | None = None


@dataclass(frozen=True)
class StationFacts:
    """What the scheduler knows of one station of a campaign."""

    station_id: str
    state: str
    attempts: int = 0
    sent_at: datetime | None = None
    next_attempt_at: datetime | None = None
    connected: bool = False
    version: str | None = None


@dataclass(frozen=True)
class Retry:
    station_id: str
    at: datetime
    reason: str


@dataclass(frozen=True)
class Decision:
    send: tuple[str, ...] = ()
    retry: tuple[Retry, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()
    done: tuple[str, ...] = ()
    finished: bool = False


def window_open(policy: Policy, now: datetime) -> bool:
    """Whether UpdateFirmware may be sent at ``now``: within the campaign's dates and its
    daily window (local time in ``policy.zone``; a window whose end is before its start
    runs over midnight)."""
    if policy.not_before is not None and now < policy.not_before:
        return False
    if policy.not_after is not None and now >= policy.not_after:
        return False
    start, end = policy.window_start, policy.window_end
    if start is None or end is None or start == end:
        return True
    local = now.astimezone(policy.zone).time().replace(tzinfo=None)
    if start < end:
        return start <= local < end
    return local >= start or local < end


def failure(policy: Policy, attempts: int, now: datetime, reason: str) -> Retry | None:
    """After a failed attempt: a retry (when attempts remain), else None (failed)."""
    if attempts < policy.max_attempts:
        return Retry("", now + policy.retry_after, reason)
    return None


def plan(
    policy: Policy, target_version: str | None, stations: Iterable[StationFacts], now: datetime
) -> Decision:
    """What the scheduler does now for one running campaign."""
    send: list[str] = []
    retry: list[Retry] = []
    failed: list[tuple[str, str]] = []
    done: list[str] = []
    over = policy.not_after is not None and now >= policy.not_after
    waiting: list[StationFacts] = []
    active = 0
    remaining = 0
    for st in stations:
        if st.state in TERMINAL:
            continue
        if st.state in ACTIVE:
            if st.sent_at is not None and now - st.sent_at >= policy.station_timeout:
                reason = f"no new firmware within {int(policy.station_timeout.total_seconds())} s"
                r = failure(policy, st.attempts, now, reason)
                if r is None:
                    failed.append((st.station_id, reason))
                else:
                    retry.append(Retry(st.station_id, r.at, reason))
                    remaining += 1
            else:
                active += 1
                remaining += 1
            continue
        # pending or retry
        if target_version is not None and st.version == target_version:
            done.append(st.station_id)
        elif over:
            failed.append((st.station_id, "the campaign's end date passed"))
        else:
            waiting.append(st)
            remaining += 1
    slots = max(0, policy.max_concurrent - active)
    if slots and not over and window_open(policy, now):
        ready = [
            st
            for st in waiting
            if st.connected and (st.next_attempt_at is None or st.next_attempt_at <= now)
        ]
        # first attempts before retries, then in the order of their ids
        ready.sort(key=lambda st: (st.attempts, st.station_id))
        send = [st.station_id for st in ready[:slots]]
    return Decision(tuple(send), tuple(retry), tuple(failed), tuple(done), remaining == 0)


# what a FirmwareStatusNotification moves a station to (None: a failure)
_STATUS_STATE = {
    "Downloading": "downloading",
    "Downloaded": "downloaded",
    "Installing": "installing",
    "Installed": "installed",
    "DownloadFailed": None,
    "InstallationFailed": None,
}


@dataclass(frozen=True)
class Step:
    """What a station's message does to its place in a campaign."""

    state: str
    rebooted: bool = False
    error: str | None = None  # set: a failed attempt (retried or failed by the caller)


def after_status(state: str, rebooted: bool, status: str, target_version: str | None) -> Step:
    """A FirmwareStatusNotification ``status`` for a station in ``state``."""
    if state not in ACTIVE or status not in _STATUS_STATE:
        return Step(state, rebooted)
    new = _STATUS_STATE[status]
    if new is None:
        return Step(state, rebooted, error=f"the station reported {status}")
    if new == "installed" and target_version is None and rebooted:
        return Step("done", rebooted)
    return Step(new, rebooted)


def after_boot(state: str, version: str | None, target_version: str | None) -> Step:
    """A boot with ``version`` of a station in ``state``."""
    if state in ("pending", "retry"):
        if target_version is not None and version == target_version:
            return Step("done")
        return Step(state)
    if state not in ACTIVE:
        return Step(state)
    if target_version is not None:
        if version == target_version:
            return Step("done", True)
        if state in ("installing", "installed"):
            return Step(state, True, error=f"booted with version {version!r}, not the target")
        return Step(state, True)
    if state == "installed":
        return Step("done", True)
    return Step(state, True)


def parse_policy(body: dict[str, Any], default_zone: str) -> tuple[Policy, dict[str, Any]]:
    """The policy of a campaign from the API's JSON, and the columns to store. Raises
    ValueError with the field's name."""

    def number(name: str, default: int, low: int, high: int) -> int:
        value = body.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{name}: a whole number from {low} to {high}")
        return value

    max_concurrent = number("max_concurrent", 10, 1, 1000)
    retries = number("retries", 2, 0, 20)
    retry_interval = number("retry_interval", 600, 1, 7 * 86400)
    station_timeout = number("station_timeout", 3600, 1, 7 * 86400)
    download_retries = number("download_retries", 3, 0, 20)
    window = body.get("window") or {}
    if not isinstance(window, dict):
        raise ValueError("window: an object {start, end, time_zone}")
    zone_name = window.get("time_zone", default_zone)
    try:
        if not isinstance(zone_name, str) or len(zone_name) > 64:
            raise ValueError
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError("window.time_zone: a time zone name such as Europe/Lisbon") from None
    times: list[time | None] = []
    for key in ("start", "end"):
        text = window.get(key)
        if text is None:
            times.append(None)
            continue
        m = _HHMM.match(text) if isinstance(text, str) else None
        if m is None:
            raise ValueError(f"window.{key}: HH:MM (local time)")
        times.append(time(int(m.group(1)), int(m.group(2))))
    if (times[0] is None) != (times[1] is None):
        raise ValueError("window: give both start and end, or neither")
    dates: list[datetime | None] = []
    for key in ("not_before", "not_after"):
        text = body.get(key)
        if text is None:
            dates.append(None)
            continue
        if not isinstance(text, str):
            raise ValueError(f"{key}: an ISO 8601 date-time")
        try:
            dates.append(parse_api_time(text))
        except (ValueError, OverflowError) as e:
            raise ValueError(f"{key}: {e}") from None
    if dates[0] is not None and dates[1] is not None and dates[1] <= dates[0]:
        raise ValueError("not_after: must be after not_before")
    policy = Policy(
        max_concurrent=max_concurrent,
        max_attempts=retries + 1,
        retry_after=timedelta(seconds=retry_interval),
        station_timeout=timedelta(seconds=station_timeout),
        window_start=times[0],
        window_end=times[1],
        zone=zone,
        not_before=dates[0],
        not_after=dates[1],
    )
    columns = {
        "max_concurrent": max_concurrent,
        "max_attempts": retries + 1,
        "retry_seconds": retry_interval,
        "station_timeout": station_timeout,
        "download_retries": download_retries,
        "window_start": times[0].strftime("%H:%M") if times[0] else None,
        "window_end": times[1].strftime("%H:%M") if times[1] else None,
        "time_zone": zone_name,
        "not_before": dates[0],
        "not_after": dates[1],
    }
    return policy, columns


def policy_of(row: dict[str, Any]) -> Policy:
    """The policy of a stored campaign."""

    def hhmm(text: str | None) -> time | None:
        return time.fromisoformat(text) if text else None

    return Policy(
        max_concurrent=int(row["max_concurrent"]),
        max_attempts=int(row["max_attempts"]),
        retry_after=timedelta(seconds=int(row["retry_seconds"])),
        station_timeout=timedelta(seconds=int(row["station_timeout"])),
        window_start=hhmm(row["window_start"]),
        window_end=hhmm(row["window_end"]),
        zone=ZoneInfo(row["time_zone"]),
        not_before=from_db(row["not_before"]),
        not_after=from_db(row["not_after"]),
    )


# ---------------------------------------------------------------------- the shell


class CampaignConflict(Exception):
    """Stations of a new campaign are in a running one (cancel it, or leave them out)."""


class CsrfRefused(ApiError):
    """A web form's upload without the session's CSRF token."""


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _safe(text: str, limit: int = 100) -> str:
    return _SAFE.sub("_", text)[:limit].lstrip(".") or "firmware.bin"


def _iso(value: str | None) -> str | None:
    return to_iso(from_db(value)) if value else None


def _is_url(text: Any) -> bool:
    return (
        isinstance(text, str)
        and len(text) <= 512
        and re.match(r"^(https?|ftps?)://[^\s/]+(/\S*)?$", text) is not None
    )


class _CampaignMetrics(Collector):
    def __init__(self, service: FirmwareService) -> None:
        self.service = service

    def collect(self) -> Any:
        g = GaugeMetricFamily(
            "csms_firmware_campaign_stations",
            "Stations of running firmware campaigns, by state (as of the scheduler's last round)",
            labels=["state"],
        )
        for state in STATES:
            g.add_metric([state], self.service.state_counts.get(state, 0))
        yield g


class FirmwareService:
    def __init__(
        self,
        services: Services,
        registry: ConnectionRegistry,
        commands: CommandPort,
        base_url: Callable[[], str],
    ) -> None:
        self.s = services
        self.settings = services.settings
        self.config = services.settings.firmware
        self.store = services.store
        self.repo = FirmwareRepository(services.store.db)
        self.clock = services.clock
        self.registry = registry
        self.commands = commands
        self.base_url = base_url
        self.dir = self.settings.data_dir / "firmware"
        self.state_counts: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._tasks = Background("firmware")
        self._round = asyncio.Lock()
        services.metrics.registry.register(_CampaignMetrics(self))

    # ------------------------------------------------------------------ wiring

    def handlers(self) -> dict[str, Any]:
        return {"FirmwareStatusNotification": self.firmware_status}

    def api_routes(self) -> list[web.RouteDef]:
        p = "/api/v1"
        return [
            web.post(f"{p}/firmware", self.api_add_image),
            web.get(f"{p}/firmware", self.api_images),
            web.delete(f"{p}/firmware/{{firmware_id}}", self.api_remove_image),
            web.post(f"{p}/firmware-campaigns", self.api_create),
            web.get(f"{p}/firmware-campaigns", self.api_campaigns),
            web.get(f"{p}/firmware-campaigns/{{campaign_id}}", self.api_campaign),
            web.post(f"{p}/firmware-campaigns/{{campaign_id}}/cancel", self.api_cancel),
            web.get(f"{p}/firmware-versions", self.api_versions),
            web.get("/downloads/firmware/{token}", self.download),
        ]

    def on_boot(self, conn: StationConnection) -> None:
        self._tasks.spawn(self.booted(conn.station_id), "firmware-boot")

    def upload_base(self) -> str:
        return self.settings.pki.upload_base_url or self.base_url()

    async def start(self) -> None:
        self._tasks.spawn(self._loop(), name="firmware-campaigns")

    async def stop(self) -> None:
        await self._tasks.stop()

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ the scheduler

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("firmware campaign round failed")
            sleeper = asyncio.ensure_future(self.clock.sleep(self.config.scheduler_seconds))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()
            self._wake.clear()

    async def run_once(self) -> None:
        """One round over the running campaigns (the scheduler's, or a test's)."""
        async with self._round:
            for row in await self.repo.running(MAX_RUNNING_CAMPAIGNS):
                await self._run_campaign(row)
            self.state_counts = await self.repo.running_state_counts()

    async def _run_campaign(self, row: dict[str, Any]) -> None:
        cid = int(row["id"])
        policy = policy_of(row)
        now = self.clock.now()
        stations, _ = await self.repo.stations(cid, MAX_CAMPAIGN_STATIONS)
        versions = await self.repo.station_versions(
            [r["station_id"] for r in stations if r["state"] in ("pending", "retry")]
        )
        facts = [
            StationFacts(
                r["station_id"],
                r["state"],
                int(r["attempts"]),
                from_db(r["sent_at"]),
                from_db(r["next_attempt_at"]),
                self.registry.is_connected(r["station_id"]),
                versions.get(r["station_id"]),
            )
            for r in stations
        ]
        decision = plan(policy, row["target_version"], facts, now)
        bound = log.bind(campaign_id=cid)
        for sid in decision.done:
            await self.repo.update_station(
                cid,
                sid,
                now,
                expect=("pending", "retry"),
                state="done",
                finished_at=now,
                version_after=versions.get(sid),
            )
            bound.info("station already has the target firmware", station_id=sid)
        for r in decision.retry:
            await self.repo.update_station(
                cid,
                r.station_id,
                now,
                expect=ACTIVE,
                state="retry",
                next_attempt_at=r.at,
                error=r.reason,
            )
            bound.warning(
                "firmware attempt failed: retried", station_id=r.station_id, reason=r.reason
            )
        for sid, reason in decision.failed:
            await self.repo.update_station(
                cid, sid, now, state="failed", finished_at=now, error=reason
            )
            bound.warning("firmware update failed", station_id=sid, reason=reason)
        if decision.send:
            image = await self.repo.campaign(cid)
            if image is not None:
                await asyncio.gather(*(self._send(image, sid) for sid in decision.send))
        if decision.finished and await self.repo.set_campaign_state(cid, "finished", now):
            bound.info("firmware campaign finished")

    async def _send(self, campaign: dict[str, Any], station_id: str) -> None:
        cid = int(campaign["id"])
        now = self.clock.now()
        token = None
        if campaign["image_url"]:
            location = campaign["image_url"]
            expires = None
        else:
            token = secrets.token_urlsafe(32)
            location = f"{self.upload_base()}/downloads/firmware/{token}"
            expires = now + timedelta(hours=self.config.download_token_hours)
        if not await self.repo.claim_send(
            cid, station_id, _token_hash(token) if token else None, expires, now
        ):
            return
        payload = {
            "location": location,
            "retrieveDate": to_ocpp(now),
            "retries": int(campaign["download_retries"]),
            "retryInterval": DOWNLOAD_RETRY_INTERVAL,
        }
        bound = log.bind(campaign_id=cid, station_id=station_id)
        try:
            await self.commands.send(station_id, "UpdateFirmware", payload, origin="csms")
        except CommandError as e:
            await self._attempt_failed(cid, station_id, f"UpdateFirmware not sent: {e}")
            return
        bound.info("UpdateFirmware sent", attempt_of=int(campaign["max_attempts"]))

    async def _attempt_failed(self, cid: int, station_id: str, reason: str) -> None:
        now = self.clock.now()
        campaign = await self.repo.campaign(cid)
        place = await self.repo.station(cid, station_id)
        if campaign is None or place is None:
            return
        r = failure(policy_of(campaign), int(place["attempts"]), now, reason)
        bound = log.bind(campaign_id=cid, station_id=station_id, reason=reason)
        if r is None:
            await self.repo.update_station(
                cid, station_id, now, expect=ACTIVE, state="failed", finished_at=now, error=reason
            )
            bound.warning("firmware update failed")
        else:
            await self.repo.update_station(
                cid,
                station_id,
                now,
                expect=ACTIVE,
                state="retry",
                next_attempt_at=r.at,
                error=reason,
            )
            bound.warning("firmware attempt failed: retried", at=to_iso(r.at))

    # ------------------------------------------------------------------ station messages

    async def firmware_status(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        sid = conn.station_id
        status = payload["status"]
        await self.store.stations.set_field(sid, "firmware_status", status)
        log.info("firmware status", status=status)
        for row in await self.repo.open_for_station(sid):
            if row["state"] not in ACTIVE:
                continue
            step = after_status(row["state"], bool(row["rebooted"]), status, row["target_version"])
            await self._apply(row, step, received_at, last_status=status)
            break  # (one UpdateFirmware is out per station)
        return {}

    async def booted(self, station_id: str) -> None:
        versions = await self.repo.station_versions([station_id])
        version = versions.get(station_id)
        for row in await self.repo.open_for_station(station_id):
            step = after_boot(row["state"], version, row["target_version"])
            await self._apply(row, step, self.clock.now(), version=version)
        self.wake()

    async def _apply(
        self,
        row: dict[str, Any],
        step: Step,
        at: datetime,
        last_status: str | None = None,
        version: str | None = None,
    ) -> None:
        cid, sid = int(row["campaign_id"]), row["station_id"]
        extra: dict[str, Any] = {}
        if last_status is not None:
            extra.update(last_status=last_status, last_status_at=at)
        if step.error is not None:
            if extra:
                await self.repo.update_station(cid, sid, at, expect=(row["state"],), **extra)
            await self._attempt_failed(cid, sid, step.error)
            self.wake()
            return
        if step.state == "done":
            extra.update(finished_at=at, version_after=version)
            log.info("station runs the new firmware", campaign_id=cid, version=version)
        if step.state != row["state"] or step.rebooted != bool(row["rebooted"]) or extra:
            await self.repo.update_station(
                cid,
                sid,
                at,
                expect=(row["state"],),
                state=step.state,
                rebooted=int(step.rebooted),
                **extra,
            )
        if step.state in TERMINAL:
            self.wake()

    # ------------------------------------------------------------------ downloads

    async def download(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        if not _TOKEN.match(token):
            raise web.HTTPNotFound(text="no such download\n")
        row = await self.repo.by_token(_token_hash(token))
        if row is None or not row["file_name"]:
            raise web.HTTPNotFound(text="no such download\n")
        expires = from_db(row["token_expires_at"])
        bound = log.bind(station_id=row["station_id"], campaign_id=row["campaign_id"])
        if row["state"] not in ACTIVE or (expires is not None and expires < self.clock.now()):
            bound.warning("firmware download refused: token expired", remote=request.remote)
            raise web.HTTPGone(text="this download URL has expired\n")
        path = self.dir / row["file_name"]
        if not path.is_file():
            bound.error("firmware file missing", file=row["file_name"])
            raise web.HTTPNotFound(text="no such download\n")
        if request.method == "GET":
            await self.repo.count_download(int(row["campaign_id"]), row["station_id"])
            bound.info("firmware download", file=row["file_name"], remote=request.remote)
        return download_response(path, _safe(row["image_name"]))

    # ------------------------------------------------------------------ API

    @operation(
        "Add a firmware image: a file (multipart) or a URL (JSON)",
        tag="firmware",
        description=(
            "multipart/form-data: fields version and name (optional, before the file) and the "
            "file (part file), at most firmware.max_file_bytes, kept in <data_dir>/firmware/ "
            "with its SHA-256; or JSON {url, version, name}: stations download from that URL"
        ),
        body=obj({"url": STR, "version": STR, "name": STR}, optional=("version", "name")),
        responses={201: ok("the image", obj({"id": INT, "sha256": {"type": ["string", "null"]}}))},
    )
    async def api_add_image(self, request: web.Request) -> web.Response:
        ctype = request.headers.get("Content-Type", "")
        by = "api"
        if ctype.startswith("multipart/form-data"):
            image = await self.receive_image(request, by)
        else:
            try:
                body = await read_json(request)
            except JsonBodyError as e:
                raise ApiError(400, "invalid_json", str(e)) from None
            if not isinstance(body, dict):
                raise ApiError(400, "invalid_json", "a JSON object {url, version, name}")
            try:
                image = await self.add_url_image(body, by)
            except ValueError as e:
                raise ApiError(400, "invalid_firmware", str(e)) from None
        return json_response(image, status=201)

    async def add_url_image(self, body: dict[str, Any], by: str | None) -> dict[str, Any]:
        url = body.get("url")
        if not _is_url(url):
            raise ValueError("url: an http(s) or ftp URL (at most 512 characters)")
        version = _version(body.get("version"))
        name = body.get("name") or url.rsplit("/", 1)[-1] or "firmware"
        if not isinstance(name, str):
            raise ValueError("name: a text")
        iid = await self.repo.add_image(
            name[:100], version, None, url, None, None, self.clock.now(), by
        )
        log.info("firmware image added", image_id=iid, url=url, version=version)
        return self.image_view(await self.repo.image(iid) or {})

    async def receive_image(
        self, request: web.Request, by: str | None, csrf: str | None = None
    ) -> dict[str, Any]:
        """A multipart body: fields ``version`` and ``name`` (optional, before the file) and
        the file (part ``file``), streamed to <data_dir>/firmware/. With ``csrf`` (the web
        form), a field ``csrf`` with that token must come before the file."""
        limit = self.config.max_file_bytes
        if request.content_length is not None and request.content_length > limit + 65536:
            raise ApiError(413, "too_large", f"a firmware file is at most {limit} bytes")
        try:
            reader = await request.multipart()
        except Exception:
            raise ApiError(400, "invalid_body", "a multipart/form-data body") from None
        fields: dict[str, str] = {}
        for _ in range(16):
            part = await reader.next()
            if part is None:
                break
            if getattr(part, "filename", None) is None:
                if part.name not in ("version", "name", "csrf"):
                    raise ApiError(400, "invalid_body", f"unknown field {part.name!r}")
                raw = await part.read_chunk(1024)
                fields[part.name or ""] = raw.decode("utf-8", "replace").strip()
                continue
            if csrf is not None and not same_token(fields.get("csrf"), csrf):
                raise CsrfRefused(403, "csrf", "the form's CSRF token is missing or wrong")
            try:
                version = _version(fields.get("version") or None)
            except ValueError as e:
                raise ApiError(400, "invalid_firmware", str(e)) from None
            original = part.filename or "firmware.bin"
            stamp = self.clock.now().strftime("%Y%m%dT%H%M%SZ")
            file_name = f"{stamp}-{secrets.token_hex(4)}-{_safe(original, 80)}"
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            try:
                got = await write_chunks(part_chunks(part), self.dir, file_name, limit, original)
            except UploadTooLarge:
                raise ApiError(
                    413, "too_large", f"a firmware file is at most {limit} bytes"
                ) from None
            if got.size == 0:
                got.path.unlink(missing_ok=True)
                raise ApiError(400, "invalid_firmware", "the file is empty")
            name = (fields.get("name") or original)[:100]
            iid = await self.repo.add_image(
                name, version, file_name, None, got.size, got.sha256, self.clock.now(), by
            )
            log.info(
                "firmware image uploaded",
                image_id=iid,
                size=got.size,
                sha256=got.sha256,
                version=version,
            )
            return self.image_view(await self.repo.image(iid) or {})
        raise ApiError(400, "invalid_body", "no file part in the multipart body")

    @staticmethod
    def image_view(r: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": r.get("id"),
            "name": r.get("name"),
            "version": r.get("version"),
            "source": "url" if r.get("url") else "file" if r.get("file_name") else "removed",
            "url": r.get("url"),
            "size": r.get("size"),
            "sha256": r.get("sha256"),
            "created_at": _iso(r.get("created_at")),
            "created_by": r.get("created_by"),
        }

    @operation(
        "The firmware images",
        tag="firmware",
        query=PAGING,
        responses={200: ok("a page of them, newest first", _page_of(obj()))},
    )
    async def api_images(self, request: web.Request) -> web.Response:
        limit, offset = paging(request)
        rows, total = await self.repo.images(limit, offset)
        items = [self.image_view(r) for r in rows]
        return json_response({"items": items, "total": total, "limit": limit, "offset": offset})

    async def remove_image(self, image_id: int) -> bool:
        """Delete an image's file (or forget its URL); False while a running campaign uses
        it. LookupError: no such image."""
        outcome, file_name = await self.repo.remove_image(image_id)
        if outcome == "missing":
            raise LookupError(f"no firmware image {image_id}")
        if outcome == "busy":
            return False
        if file_name:
            with contextlib.suppress(OSError):
                (self.dir / file_name).unlink()
        log.info("firmware image removed", image_id=image_id, file=file_name)
        return True

    @operation(
        "Remove a firmware image (its file is deleted; campaigns keep naming it)",
        tag="firmware",
        path={"firmware_id": {"type": "integer", "minimum": 1}},
        responses={
            200: ok("the image, its source now removed", obj({"id": INT, "source": STR})),
            409: fails("a running campaign uses it"),
        },
    )
    async def api_remove_image(self, request: web.Request) -> web.Response:
        try:
            image_id = int(request.match_info["firmware_id"])
        except ValueError:
            raise ApiError(404, "not_found", "a firmware id is a number") from None
        if not 0 < image_id < 2**62:
            raise ApiError(404, "not_found", "no such firmware image")
        try:
            removed = await self.remove_image(image_id)
        except LookupError as e:
            raise ApiError(404, "not_found", str(e.args[0])) from None
        if not removed:
            raise ApiError(409, "in_use", "a running campaign uses this image")
        return json_response(self.image_view(await self.repo.image(image_id) or {}))

    async def create_campaign(self, body: dict[str, Any], by: str | None) -> dict[str, Any]:
        """Check and store a campaign (ValueError: what is wrong, LookupError: not found)."""
        image_id = body.get("firmware_id")
        if not isinstance(image_id, int) or isinstance(image_id, bool) or not 0 < image_id < 2**62:
            raise ValueError("firmware_id: the id of a firmware image (POST /firmware)")
        image = await self.repo.image(image_id)
        if image is None:
            raise LookupError(f"no firmware image {image_id}")
        if not image["file_name"] and not image["url"]:
            raise CampaignConflict(f"firmware image {image_id} was removed")
        stations = body.get("stations")
        if (
            not isinstance(stations, list)
            or not stations
            or len(stations) > MAX_CAMPAIGN_STATIONS
            or not all(isinstance(s, str) and _STATION_ID.match(s) for s in stations)
        ):
            raise ValueError(f"stations: a list of 1 to {MAX_CAMPAIGN_STATIONS} station ids")
        stations = list(dict.fromkeys(stations))
        target = _version(body.get("target_version", image["version"]))
        _, columns = parse_policy(body, self.config.time_zone)
        known = await self.repo.station_versions(stations)
        unknown = [s for s in stations if s not in known]
        if unknown:
            raise LookupError(f"unknown stations: {', '.join(unknown[:20])}")
        busy = await self.repo.busy(stations)
        if busy:
            names = ", ".join(f"{b['station_id']} (campaign {b['campaign_id']})" for b in busy)
            raise CampaignConflict(f"stations already in a running campaign: {names}")
        cid = await self.repo.create_campaign(
            {"image_id": image_id, "target_version": target, "created_by": by, **columns},
            [(s, known[s]) for s in stations],
            self.clock.now(),
        )
        log.info(
            "firmware campaign created",
            campaign_id=cid,
            stations=len(stations),
            target_version=target,
        )
        self.wake()
        return await self.campaign_view(cid) or {}

    async def campaign_view(
        self, cid: int, limit: int = 1000, offset: int = 0
    ) -> dict[str, Any] | None:
        row = await self.repo.campaign(cid)
        if row is None:
            return None
        stations, total = await self.repo.stations(cid, limit, offset)
        counts = (await self.repo.state_counts([cid]))[cid]
        return {
            **self._campaign_summary(row, counts),
            "firmware": {
                "id": row["image_id"],
                "name": row["image_name"],
                "version": row["image_version"],
                "sha256": row["sha256"],
                "size": row["size"],
                "url": row["image_url"],
            },
            "stations": [
                {
                    "station_id": s["station_id"],
                    "state": s["state"],
                    "attempts": s["attempts"],
                    "version_before": s["version_before"],
                    "version_after": s["version_after"],
                    "last_status": s["last_status"],
                    "last_status_at": _iso(s["last_status_at"]),
                    "sent_at": _iso(s["sent_at"]),
                    "next_attempt_at": _iso(s["next_attempt_at"]),
                    "finished_at": _iso(s["finished_at"]),
                    "downloads": s["downloads"],
                    "error": s["error"],
                }
                for s in stations
            ],
            "stations_total": total,
            "limit": limit,
            "offset": offset,
        }

    @staticmethod
    def _campaign_summary(row: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
        return {
            "id": row["id"],
            "state": row["state"],
            "firmware_id": row["image_id"],
            "target_version": row["target_version"],
            "max_concurrent": row["max_concurrent"],
            "retries": int(row["max_attempts"]) - 1,
            "retry_interval": row["retry_seconds"],
            "station_timeout": row["station_timeout"],
            "download_retries": row["download_retries"],
            "window": {
                "start": row["window_start"],
                "end": row["window_end"],
                "time_zone": row["time_zone"],
            },
            "not_before": _iso(row["not_before"]),
            "not_after": _iso(row["not_after"]),
            "created_at": _iso(row["created_at"]),
            "created_by": row["created_by"],
            "updated_at": _iso(row["updated_at"]),
            "counts": counts,
        }

    async def campaigns_page(
        self, limit: int, offset: int, state: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        rows, total = await self.repo.campaigns(limit, offset, state)
        counts = await self.repo.state_counts([int(r["id"]) for r in rows])
        items = [
            {**self._campaign_summary(r, counts[int(r["id"])]), "firmware_name": r["image_name"]}
            for r in rows
        ]
        return items, total

    async def cancel(self, cid: int) -> bool:
        ok = await self.repo.set_campaign_state(cid, "cancelled", self.clock.now())
        if ok:
            log.info("firmware campaign cancelled", campaign_id=cid)
        return ok

    @operation(
        "Start a firmware campaign",
        tag="firmware",
        description=(
            "UpdateFirmware to the stations in waves (max_concurrent at once), retries per "
            "station retry_interval seconds apart, within an optional daily window (local "
            "time) and dates; done when a station boots with the target version"
        ),
        body=obj(
            {
                "firmware_id": INT,
                "stations": array(STR, max_items=10_000),
                "target_version": STR,
                "max_concurrent": INT,
                "retries": INT,
                "retry_interval": INT,
                "station_timeout": INT,
                "download_retries": INT,
                "window": obj(
                    {"start": STR, "end": STR, "time_zone": STR}, optional=("time_zone",)
                ),
                "not_before": STR,
                "not_after": STR,
            },
            optional=(
                "target_version",
                "max_concurrent",
                "retries",
                "retry_interval",
                "station_timeout",
                "download_retries",
                "window",
                "not_before",
                "not_after",
            ),
        ),
        responses={
            201: ok("the campaign, its stations pending", obj({"id": INT, "state": STR})),
            404: fails("no such firmware image, or unknown stations"),
            409: fails("stations already in a running campaign"),
        },
    )
    async def api_create(self, request: web.Request) -> web.Response:
        try:
            body = await read_json(request)
        except JsonBodyError as e:
            raise ApiError(400, "invalid_json", str(e)) from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "a JSON object")
        try:
            view = await self.create_campaign(body, "api")
        except LookupError as e:
            raise ApiError(404, "not_found", str(e.args[0])) from None
        except ValueError as e:
            raise ApiError(400, "invalid_campaign", str(e)) from None
        except CampaignConflict as e:
            raise ApiError(409, "stations_busy", str(e)) from None
        return json_response(view, status=201)

    @operation(
        "The firmware campaigns, with how many stations are in each state",
        tag="firmware",
        query=(
            *PAGING,
            Param("state", {"type": "string", "enum": ["running", "finished", "cancelled"]}),
        ),
        responses={200: ok("a page of them, newest first", _page_of(obj()))},
    )
    async def api_campaigns(self, request: web.Request) -> web.Response:
        limit, offset = paging(request)
        state = request.query.get("state")
        if state is not None and state not in ("running", "finished", "cancelled"):
            raise ApiError(400, "invalid_query", "state: running, finished or cancelled")
        items, total = await self.campaigns_page(limit, offset, state)
        return json_response({"items": items, "total": total, "limit": limit, "offset": offset})

    def _campaign_id(self, request: web.Request) -> int:
        try:
            cid = int(request.match_info["campaign_id"])
        except ValueError:
            raise ApiError(404, "not_found", "a campaign id is a number") from None
        if not 1 <= cid < 2**62:
            raise ApiError(404, "not_found", "no such campaign")
        return cid

    @operation(
        "A firmware campaign and its progress per station",
        tag="firmware",
        path={"campaign_id": {"type": "integer", "minimum": 1}},
        query=PAGING,
        responses={
            200: ok(
                "the campaign and a page of its stations",
                obj({"id": INT, "stations": array(obj())}),
            )
        },
    )
    async def api_campaign(self, request: web.Request) -> web.Response:
        cid = self._campaign_id(request)
        limit, offset = paging(request, default_limit=1000)
        view = await self.campaign_view(cid, limit, offset)
        if view is None:
            raise ApiError(404, "not_found", f"no campaign {cid}")
        return json_response(view)

    @operation(
        "Cancel a running firmware campaign",
        tag="firmware",
        path={"campaign_id": {"type": "integer", "minimum": 1}},
        body_required=False,
        responses={
            200: ok(
                "the campaign, its stations not over cancelled", obj({"id": INT, "state": STR})
            ),
            409: fails("the campaign is not running"),
        },
    )
    async def api_cancel(self, request: web.Request) -> web.Response:
        cid = self._campaign_id(request)
        if await self.repo.campaign(cid) is None:
            raise ApiError(404, "not_found", f"no campaign {cid}")
        if not await self.cancel(cid):
            raise ApiError(409, "not_running", "the campaign is not running")
        return json_response(await self.campaign_view(cid))

    async def versions(self) -> list[dict[str, Any]]:
        return await self.repo.versions()

    @operation(
        "Firmware versions across the fleet",
        tag="firmware",
        responses={
            200: ok(
                "stations (not retired) per version, most common first",
                list_of(obj({"version": {"type": ["string", "null"]}, "stations": INT})),
            )
        },
    )
    async def api_versions(self, request: web.Request) -> web.Response:
        items = await self.versions()
        return json_response({"items": items, "total": sum(int(i["stations"]) for i in items)})


def _version(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > _VERSION_MAX:
        raise ValueError(f"version: a text of at most {_VERSION_MAX} characters")
    return value.strip() or None
