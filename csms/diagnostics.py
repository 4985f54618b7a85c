"""Diagnostics: ``GetDiagnostics`` with an upload URL csms serves itself, the files stations
upload, and ``DiagnosticsStatusNotification`` followed.

- The preparer of ``GetDiagnostics`` (every path an operator's command takes: the API's
  ``POST /api/v1/stations/{id}/diagnostics``, the generic command route, the web page): with
  no ``location``, csms makes one, ``<base>/uploads/diagnostics/<token>``, a one-time
  token bound to the station (its SHA-256 stored), valid ``firmware.diagnostics_token_hours``.
  An operator's own ``location`` (their FTP server) is passed on unchanged.
- ``PUT``/``POST /uploads/diagnostics/{token}``: the file as the body (or the first file part
  of a multipart body), streamed to ``<data_dir>/diagnostics/<station>/``, at most
  ``firmware.max_diagnostics_bytes`` (413 beyond), held to a rate, not a deadline
  (csms.http's ``/uploads/`` rule); a used or expired token is 410.
- ``DiagnosticsStatusNotification``: kept on the station (as before) and on its newest
  request (OCPP 1.6 gives no request id).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from .commands import CommandError, CommandPort, InvalidCommand
from .handlers import Services
from .http import ApiError, JsonBodyError, json_response, read_json
from .openapi import INT, STR, fails, file_answer, list_of, obj, ok, operation
from .repositories.firmware import DIAGNOSTICS_KEPT, FirmwareRepository
from .security import station_dir_name
from .timeparse import from_db, parse_api_time, to_iso, to_ocpp
from .uploads import NoFile, UploadTooLarge, download_response, receive_file

if TYPE_CHECKING:
    from .connection import StationConnection

log = structlog.get_logger("csms.diagnostics")

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,100}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _iso(value: str | None) -> str | None:
    return to_iso(from_db(value)) if value else None


class DiagnosticsService:
    def __init__(
        self, services: Services, commands: CommandPort, base_url: Callable[[], str]
    ) -> None:
        self.s = services
        self.settings = services.settings
        self.config = services.settings.firmware
        self.store = services.store
        self.repo = FirmwareRepository(services.store.db)
        self.clock = services.clock
        self.commands = commands
        self.base_url = base_url
        self.dir = self.settings.data_dir / "diagnostics"
        self._uploading: set[str] = set()

    def handlers(self) -> dict[str, Any]:
        return {"DiagnosticsStatusNotification": self.diagnostics_status}

    def preparers(self) -> dict[str, Any]:
        return {"GetDiagnostics": self.prepare_get_diagnostics}

    def api_routes(self) -> list[web.RouteDef]:
        p = "/api/v1/stations/{station_id}/diagnostics"
        return [
            web.post(p, self.api_request),
            web.get(p, self.api_list),
            web.get(p + "/{name}", self.api_file),
            web.put("/uploads/diagnostics/{token}", self.upload),
            web.post("/uploads/diagnostics/{token}", self.upload),
        ]

    def upload_base(self) -> str:
        return self.settings.pki.upload_base_url or self.base_url()

    # ------------------------------------------------------------------ requests

    async def prepare_get_diagnostics(
        self, station_id: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        return (await self._prepare(station_id, payload, "command"))[0]

    async def _prepare(
        self, station_id: str, payload: dict[str, Any], by: str | None
    ) -> tuple[dict[str, Any], int | None]:
        """The payload to send and the id of csms's request (None: the operator's own
        location, which is passed on unchanged)."""
        if payload.get("location"):
            return payload, None
        out = dict(payload)
        times = {}
        for key in ("startTime", "stopTime"):
            if key in out:
                if not isinstance(out[key], str):
                    raise InvalidCommand(f"{key}: an ISO 8601 date-time")
                try:
                    out[key] = to_ocpp(parse_api_time(out[key]))
                except (ValueError, OverflowError) as e:
                    raise InvalidCommand(f"{key}: {e}") from None
                times[key] = out[key]
        token = secrets.token_urlsafe(32)
        out["location"] = f"{self.upload_base()}/uploads/diagnostics/{token}"
        now = self.clock.now()
        rid, gone = await self.repo.add_diagnostics(
            station_id,
            _token_hash(token),
            now,
            now + timedelta(hours=self.config.diagnostics_token_hours),
            times.get("startTime"),
            times.get("stopTime"),
            by,
        )
        for name in gone:  # (the requests beyond the newest DIAGNOSTICS_KEPT, and their files)
            path = self.file_path(station_id, name)
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()
        return out, rid

    async def request(
        self, station_id: str, params: dict[str, Any], by: str, origin: str
    ) -> dict[str, Any]:
        """Send GetDiagnostics with csms's upload URL; the station's answer and the request."""
        payload: dict[str, Any] = {}
        names = {
            "start_time": "startTime",
            "stop_time": "stopTime",
            "retries": "retries",
            "retry_interval": "retryInterval",
        }
        unknown = set(params) - set(names)
        if unknown:
            raise InvalidCommand(f"unknown field {sorted(unknown)[0]!r}")
        for key, ocpp_name in names.items():
            if key not in params:
                continue
            value = params[key]
            if value is None:
                raise InvalidCommand(f"{key}: leave it out rather than null")
            if value == "":  # (an empty field of the web form)
                continue
            if key in ("retries", "retry_interval"):
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 3600:
                    raise InvalidCommand(f"{key}: a whole number from 0 to 3600")
            payload[ocpp_name] = value
        prepared, rid = await self._prepare(station_id, payload, by)
        answer = await self.commands.send(station_id, "GetDiagnostics", prepared, origin=origin)
        name = answer.get("fileName") if isinstance(answer, dict) else None
        if rid is not None:
            await self.repo.diagnostics_answered(rid, name if isinstance(name, str) else None)
        log.info("GetDiagnostics sent", station_id=station_id, request=rid, file_name=name)
        return {"request_id": rid, "file_name": name}

    async def diagnostics_status(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        status = payload["status"]
        await self.store.stations.set_field(conn.station_id, "diagnostics_status", status)
        await self.repo.diagnostics_status(conn.station_id, status, received_at)
        log.info("diagnostics status", status=status)
        return {}

    # ------------------------------------------------------------------ uploads

    async def upload(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        if not _TOKEN.match(token):
            raise web.HTTPNotFound(text="no such upload\n")
        digest = _token_hash(token)
        row = await self.repo.diagnostics_by_token(digest)
        if row is None:
            raise web.HTTPNotFound(text="no such upload\n")
        bound = log.bind(station_id=row["station_id"], request=row["id"])
        expires = from_db(row["expires_at"])
        if row["uploaded_at"] is not None or (expires is not None and expires < self.clock.now()):
            bound.warning("diagnostics upload refused: used or expired", remote=request.remote)
            raise web.HTTPGone(text="this upload URL was used or has expired\n")
        if digest in self._uploading:
            raise web.HTTPConflict(text="an upload to this URL is in progress\n")
        limit = self.config.max_diagnostics_bytes
        self._uploading.add(digest)
        try:
            directory = self.dir / station_dir_name(row["station_id"])
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            stamp = self.clock.now().strftime("%Y%m%dT%H%M%SZ")
            base = _SAFE.sub("_", row["answer_file"] or "diagnostics.log")[:100].lstrip(".")
            name = f"{stamp}-{row['id']}-{base or 'diagnostics.log'}"
            try:
                got = await receive_file(request, directory, name, limit)
            except UploadTooLarge as e:
                bound.warning("diagnostics upload refused: too large", limit=limit)
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=e.size) from None
            except NoFile:
                raise web.HTTPBadRequest(text="no file in the multipart body\n") from None
        finally:
            self._uploading.discard(digest)
        if not await self.repo.diagnostics_uploaded(row["id"], name, got.size, self.clock.now()):
            with contextlib.suppress(OSError):
                got.path.unlink()
            raise web.HTTPGone(text="this upload URL was used\n")
        bound.info("diagnostics uploaded", file=name, size=got.size)
        return web.json_response({"status": "ok", "file": name, "size": got.size}, status=201)

    # ------------------------------------------------------------------ files

    async def requests_of(self, station_id: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self.repo.diagnostics(station_id, limit)
        for r in rows:
            for k in ("created_at", "expires_at", "uploaded_at", "last_status_at"):
                r[k] = _iso(r[k])
        return rows

    def file_path(self, station_id: str, name: str) -> Path | None:
        if not _FILE_NAME.match(name):
            return None
        path = self.dir / station_dir_name(station_id) / name
        return path if path.is_file() else None

    async def _require_station(self, request: web.Request) -> str:
        sid = request.match_info["station_id"]
        if await self.store.stations.auth(sid) is None:
            raise ApiError(404, "not_found", f"no station {sid!r}")
        return sid

    @operation(
        "Ask a station for its diagnostics (GetDiagnostics)",
        tag="diagnostics",
        description=(
            "csms gives the station a one-time upload URL (/uploads/diagnostics/<token>); the "
            "file arrives in <data_dir>/diagnostics/<station>/. Times: ISO 8601 (no zone: UTC)"
        ),
        body=obj(
            {
                "start_time": STR,
                "stop_time": STR,
                "retries": {"type": "integer", "minimum": 0, "maximum": 3600},
                "retry_interval": {"type": "integer", "minimum": 0, "maximum": 3600},
            },
            optional=("start_time", "stop_time", "retries", "retry_interval"),
            extra=False,
        ),
        body_required=False,
        responses={
            200: ok(
                "the request and the file name the station answered",
                obj({"request_id": INT, "file_name": {"type": ["string", "null"]}}),
            ),
            409: fails("the station is not connected"),
            502: fails("the station answered with a CallError"),
            504: fails("no answer in time"),
        },
    )
    async def api_request(self, request: web.Request) -> web.Response:
        sid = await self._require_station(request)
        body: Any = {}
        if request.can_read_body:
            try:
                body = await read_json(request)
            except JsonBodyError as e:
                raise ApiError(400, "invalid_json", str(e)) from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "a JSON object {start_time, stop_time}")
        try:
            out = await self.request(sid, body, "api", "api")
        except CommandError as e:
            raise ApiError(e.http_status, e.code, str(e)) from None
        return json_response(out)

    @operation(
        "A station's diagnostics requests and their files",
        tag="diagnostics",
        responses={200: ok("the newest 200, newest first", list_of(obj()))},
    )
    async def api_list(self, request: web.Request) -> web.Response:
        sid = await self._require_station(request)
        items = await self.requests_of(sid, DIAGNOSTICS_KEPT)
        return json_response({"items": items, "total": len(items)})

    @operation(
        "Download a diagnostics file",
        tag="diagnostics",
        responses={200: file_answer("the file as the station uploaded it")},
    )
    async def api_file(self, request: web.Request) -> web.StreamResponse:
        sid = await self._require_station(request)
        name = request.match_info["name"]
        path = self.file_path(sid, name)
        if path is None or await self.repo.diagnostics_file(sid, name) is None:
            raise ApiError(404, "not_found", "no such diagnostics file")
        return download_response(path)
