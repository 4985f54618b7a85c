"""Bulk commands: one OCPP command to a selection of stations (a list, a Location, a filter
such as "firmware X" or "offline for more than an hour"), with bounded concurrency, progress
and each station's result.

Each station's command goes through exactly the path of a single command
(``POST /api/v1/stations/{id}/commands/{action}``): the same payload validation, the same
preparers (:attr:`csms.handlers.Services.command_preparers`), the same command port and
command log (origin ``bulk:<job id>``).

Pure core: :func:`parse_selection` (what the operator asked for, checked) and :func:`select`
(the stations it means, from facts and ``now``), :func:`outcome_of` (an answer's state).
The job is stored with its selection as resolved at creation (csms.repositories.bulk); a
restarted csms resumes the pending stations, and those in flight when it stopped become
``unknown`` ("csms restarted").
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiohttp import web

from . import ocppj
from .api_common import page_response, paging
from .commands import (
    CommandError,
    CommandPort,
    CommandTimeout,
    ConnectionRegistry,
    InvalidCommand,
    StationOffline,
    StationRejected,
    UnknownAction,
)
from .handlers import Services
from .http import ApiError, JsonBodyError, json_response, read_json
from .openapi import BOOL, INT, PAGING, STR, Param, array, fails, obj, ok, operation
from .redact import redact_payload
from .repositories.bulk import BulkRepository
from .timeparse import from_db, to_iso

log = structlog.get_logger("csms.bulk")

MAX_STATIONS = 10_000  # in an explicit list, and in a resolved selection
DEFAULT_CONCURRENCY = 10
MAX_CONCURRENCY = 50
PREVIEW = 50  # ids shown by a dry run
PAGE = 500  # pending stations read at a time by a running job
# after a restart, the running jobs resume this long after csms is up (seconds of the
# injected clock): time for the stations to connect again
RESUME_AFTER = 30.0
# rounds of 0.1 s in which a stopping csms cancels its running jobs
STOP_ROUNDS = 100
STATES = (
    "pending",
    "sent",
    "accepted",
    "rejected",
    "error",
    "offline",
    "timeout",
    "unknown",
    "cancelled",
)
FILTER_KEYS = {
    "firmware_version",
    "vendor",
    "model",
    "connected",
    "offline_minutes",
    "security_profile",
}


class SelectionError(ValueError):
    """The selection is not valid; ``field`` names what."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Selection:
    stations: tuple[str, ...] | None = None
    location: str | None = None
    all: bool = False
    firmware_version: str | None = None
    vendor: str | None = None
    model: str | None = None
    connected: bool | None = None
    offline_minutes: float | None = None
    security_profile: int | None = None


@dataclass(frozen=True, slots=True)
class StationFacts:
    id: str
    location_id: str | None
    vendor: str | None
    model: str | None
    firmware_version: str | None
    security_profile: int
    connected: bool
    last_seen: datetime | None
    retired: bool


def _text(raw: Any, field: str, most: int = 200) -> str:
    if not isinstance(raw, str) or not raw or len(raw) > most:
        raise SelectionError(field, f"a text of 1 to {most} characters")
    return raw


def parse_selection(raw: Any) -> Selection:
    """The selection of a request body, checked: ``{"stations": [ids]}``, ``{"location":
    id}``, ``{"all": true}`` and/or ``{"filter": {...}}`` (every part given must hold)."""
    if not isinstance(raw, dict) or not raw:
        raise SelectionError("selection", 'an object: "stations", "location", "all", "filter"')
    unknown = set(raw) - {"stations", "location", "all", "filter"}
    if unknown:
        raise SelectionError(f"selection.{sorted(unknown)[0]}", "unknown key")
    stations = None
    if "stations" in raw:
        ids = raw["stations"]
        if not isinstance(ids, list) or not ids or len(ids) > MAX_STATIONS:
            raise SelectionError("selection.stations", f"a list of 1 to {MAX_STATIONS} ids")
        seen: dict[str, None] = {}
        for i, sid in enumerate(ids):
            seen[_text(sid, f"selection.stations[{i}]", 64)] = None
        stations = tuple(seen)
    location = _text(raw["location"], "selection.location", 36) if "location" in raw else None
    everything = raw.get("all", False)
    if not isinstance(everything, bool):
        raise SelectionError("selection.all", "true or false")
    f = raw.get("filter", {})
    if not isinstance(f, dict):
        raise SelectionError("selection.filter", "an object")
    unknown = set(f) - FILTER_KEYS
    if unknown:
        raise SelectionError(f"selection.filter.{sorted(unknown)[0]}", "unknown key")
    out: dict[str, Any] = {}
    for key in ("firmware_version", "vendor", "model"):
        if key in f:
            out[key] = _text(f[key], f"selection.filter.{key}", 50)
    if "connected" in f:
        if not isinstance(f["connected"], bool):
            raise SelectionError("selection.filter.connected", "true or false")
        out["connected"] = f["connected"]
    if "offline_minutes" in f:
        m = f["offline_minutes"]
        if (
            isinstance(m, bool)
            or not isinstance(m, int | float)
            or not math.isfinite(m)
            or not 0 < m <= 10**7
        ):
            raise SelectionError("selection.filter.offline_minutes", "a number of minutes > 0")
        out["offline_minutes"] = float(m)
    if "security_profile" in f:
        p = f["security_profile"]
        if isinstance(p, bool) or p not in (1, 2, 3):
            raise SelectionError("selection.filter.security_profile", "1, 2 or 3")
        out["security_profile"] = p
    if stations is None and location is None and not everything and not out:
        raise SelectionError(
            "selection", 'name stations, a location, a filter, or {"all": true} for every station'
        )
    return Selection(stations=stations, location=location, all=everything, **out)


def matches(s: StationFacts, sel: Selection, now: datetime) -> bool:
    """Whether a station is meant by the selection's location and filter (not its list)."""
    if s.retired:
        return False
    if sel.location is not None and (s.location_id or "").lower() != sel.location.lower():
        return False
    if sel.firmware_version is not None and s.firmware_version != sel.firmware_version:
        return False
    if sel.vendor is not None and (s.vendor or "").lower() != sel.vendor.lower():
        return False
    if sel.model is not None and (s.model or "").lower() != sel.model.lower():
        return False
    if sel.connected is not None and s.connected != sel.connected:
        return False
    if sel.security_profile is not None and s.security_profile != sel.security_profile:
        return False
    if sel.offline_minutes is not None:
        if s.connected:
            return False
        since = timedelta(minutes=sel.offline_minutes)
        if s.last_seen is not None and now - s.last_seen < since:
            return False
    return True


def select(
    fleet: Iterable[StationFacts], sel: Selection, now: datetime
) -> tuple[list[str], list[str]]:
    """The station ids the selection means (a list's order, else by id; retired stations
    never), and the ids of its list that are no station at all."""
    by_id = {s.id: s for s in fleet}
    if sel.stations is not None:
        missing = [sid for sid in sel.stations if sid not in by_id]
        chosen = [by_id[sid] for sid in sel.stations if sid in by_id]
    else:
        missing, chosen = [], sorted(by_id.values(), key=lambda s: s.id)
    return [s.id for s in chosen if matches(s, sel, now)], missing


def outcome_of(answer: Any) -> str:
    """A station's answer as an item state: ``accepted`` unless its status says otherwise
    (Rejected, NotSupported, Unknown... are ``rejected``)."""
    if isinstance(answer, dict) and isinstance(answer.get("status"), str):
        return "accepted" if answer["status"] in ("Accepted", "Unlocked") else "rejected"
    return "accepted"


def error_state(e: BaseException) -> str:
    if isinstance(e, StationOffline):
        return "offline"
    if isinstance(e, CommandTimeout):
        return "timeout"
    return "error"


def check_command(action: str, payload: Any) -> None:
    """The command port's own checks, made before a job is stored (raises UnknownAction or
    InvalidCommand, as CommandPort.send would for each station)."""
    if action not in ocppj.CS_ACTIONS:
        raise UnknownAction(
            f"{action!r} is not an OCPP 1.6 request to a charge point; "
            f"one of: {', '.join(sorted(ocppj.CS_ACTIONS))}"
        )
    if not isinstance(payload, dict):
        raise InvalidCommand("the payload must be a JSON object")
    try:
        ocppj.check_payload(ocppj.CALL, action, payload)
        ocppj.call_frame("check", action, payload)
    except ocppj.OcppError as e:
        raise InvalidCommand(f"invalid {action} payload: {e.description}") from None
    except (ValueError, TypeError) as e:
        raise InvalidCommand(f"invalid {action} payload: {e}") from None


JOB = obj(
    {
        "id": INT,
        "action": STR,
        "payload": obj(),
        "selection": obj(),
        "concurrency": INT,
        "state": {"type": "string", "enum": ["running", "finished", "cancelled"]},
        "total": INT,
        "done": INT,
        "percent": {"type": "number"},
        "progress": obj({state: INT for state in STATES}),
        "created_by": STR,
        "created_at": STR,
        "finished_at": {"type": ["string", "null"]},
    },
    description="a bulk command: what, to how many, its progress by station state",
)
JOB_PATH = {"job_id": {"type": "integer", "minimum": 1}}
BODY = obj(
    {
        "action": {**STR, "description": "an OCPP 1.6 request to a charge point"},
        "payload": obj(description="its payload, as for a single command"),
        "selection": obj(
            {
                "stations": array(STR, max_items=MAX_STATIONS),
                "location": STR,
                "all": BOOL,
                "filter": obj(
                    {
                        "firmware_version": STR,
                        "vendor": STR,
                        "model": STR,
                        "connected": BOOL,
                        "offline_minutes": {"type": "number", "exclusiveMinimum": 0},
                        "security_profile": {"type": "integer", "enum": [1, 2, 3]},
                    },
                    optional=FILTER_KEYS,
                    extra=False,
                ),
            },
            optional=("stations", "location", "all", "filter"),
            extra=False,
        ),
        "concurrency": {"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY},
        "dry_run": BOOL,
    },
    optional=("payload", "concurrency", "dry_run"),
    extra=False,
)


class BulkService:
    """Creates, runs, resumes and cancels bulk jobs; its routes are /api/v1/bulk-commands."""

    def __init__(
        self,
        services: Services,
        registry: ConnectionRegistry,
        commands: CommandPort,
        repo: BulkRepository,
    ) -> None:
        self.s = services
        self.registry = registry
        self.commands = commands
        self.repo = repo
        self._jobs: dict[int, asyncio.Task[None]] = {}
        self.resume_after = RESUME_AFTER
        self._resume: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ selection

    async def fleet(self) -> list[StationFacts]:
        out = []
        for r in await self.repo.fleet():
            seen = self.s.store.stations.last_seen(r["id"]) or from_db(r["last_seen_at"])
            out.append(
                StationFacts(
                    id=r["id"],
                    location_id=r["location_id"],
                    vendor=r["vendor"],
                    model=r["model"],
                    firmware_version=r["firmware_version"],
                    security_profile=int(r["security_profile"] or 1),
                    connected=self.registry.is_connected(r["id"]),
                    last_seen=seen,
                    retired=r["retired_at"] is not None,
                )
            )
        return out

    async def resolve(self, sel: Selection) -> tuple[list[str], list[str]]:
        return select(await self.fleet(), sel, self.s.clock.now())

    # ------------------------------------------------------------------ jobs

    async def create(
        self,
        action: str,
        payload: dict[str, Any],
        selection: dict[str, Any],
        concurrency: int,
        station_ids: Sequence[str],
        created_by: str,
    ) -> int:
        job_id = await self.repo.create(
            action, payload, selection, concurrency, station_ids, created_by
        )
        log.info(
            "bulk command created",
            job_id=job_id,
            action=action,
            stations=len(station_ids),
            concurrency=concurrency,
            by=created_by,
        )
        self._spawn(job_id)
        return job_id

    def _spawn(self, job_id: int) -> None:
        task = asyncio.create_task(self._run(job_id), name=f"bulk-{job_id}")
        self._jobs[job_id] = task
        task.add_done_callback(lambda _: self._jobs.pop(job_id, None))

    async def start(self) -> None:
        """What was in flight when csms stopped becomes ``unknown`` now; the running jobs
        resume ``resume_after`` seconds later."""
        ids = await self.repo.recover(self.s.clock.now())
        if ids:
            log.info("bulk commands to resume", jobs=ids, after_seconds=self.resume_after)
            self._resume = asyncio.create_task(self._resume_later(ids), name="bulk-resume")

    async def _resume_later(self, ids: list[int]) -> None:
        await self.s.clock.sleep(self.resume_after)
        for job_id in ids:
            log.info("bulk command resumed", job_id=job_id)
            self._spawn(job_id)

    async def stop(self) -> None:
        tasks = list(self._jobs.values())
        if self._resume is not None:
            tasks.append(self._resume)
        pending = set(tasks)
        # cancelled again while one goes on: Python 3.11's wait_for can swallow a
        # cancellation that comes as the lock it waits for is acquired (the command would
        # then run to its answer or timeout, and be recorded as such, not as "unknown")
        for _ in range(STOP_ROUNDS):
            if not pending:
                break
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        for t in tasks:
            if t.done() and not t.cancelled():
                t.exception()  # (retrieved: logged by _run already)

    async def wait(self, job_id: int) -> None:
        """Until the job's task ends (tests; the web and the API poll the state)."""
        task = self._jobs.get(job_id)
        if task is not None:
            await asyncio.shield(task)

    async def cancel(self, job_id: int) -> bool:
        done = await self.repo.cancel(job_id)
        if done:
            log.info("bulk command cancelled", job_id=job_id)
        return done

    async def _run(self, job_id: int) -> None:
        try:
            job = await self.repo.get(job_id)
            if job is None:
                return
            width = max(1, min(MAX_CONCURRENCY, int(job["concurrency"])))
            while True:
                batch = await self.repo.pending(job_id, PAGE)
                if not batch:
                    break
                items = iter(batch)
                await asyncio.gather(
                    *(self._worker(job_id, job, items) for _ in range(min(width, len(batch))))
                )
            await self.repo.finish_job(job_id)
            log.info("bulk command finished", job_id=job_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("bulk command stopped by an error (resumed at the next start)")

    async def _worker(
        self, job_id: int, job: dict[str, Any], items: Iterator[dict[str, Any]]
    ) -> None:
        for item in items:  # (one iterator shared: each item is taken by one worker)
            await self._one(job_id, job, int(item["position"]), item["station_id"])

    async def _one(self, job_id: int, job: dict[str, Any], position: int, station_id: str) -> None:
        if not await self.repo.claim(job_id, position):
            return  # cancelled meanwhile
        action, payload = job["action"], dict(job["payload"])
        try:
            # exactly the single command's path: preparer, then the command port
            prepare = self.s.command_preparers.get(action)
            if prepare is not None:
                payload = await prepare(station_id, payload)
            answer = await self.commands.send(station_id, action, payload, origin=f"bulk:{job_id}")
        except asyncio.CancelledError:
            raise
        except StationRejected as e:
            err = e.error
            result = {
                "error": str(e),
                "call_error": {"code": err.code, "description": err.description},
            }
            await self.repo.finish_item(job_id, position, "error", result)
        except CommandError as e:
            await self.repo.finish_item(job_id, position, error_state(e), {"error": str(e)})
        except Exception as e:  # a preparer's refusal (csms.security: ApiError)
            await self.repo.finish_item(job_id, position, "error", {"error": str(e)[:500]})
        else:
            await self.repo.finish_item(job_id, position, outcome_of(answer), answer)

    # ------------------------------------------------------------------ views

    async def views(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        progress = await self.repo.progress([int(r["id"]) for r in rows])
        return [self._view(r, progress[int(r["id"])]) for r in rows]

    @staticmethod
    def _view(row: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
        total = int(row["total"])
        done = sum(n for state, n in counts.items() if state not in ("pending", "sent"))
        return {
            "id": int(row["id"]),
            "action": row["action"],
            "payload": redact_payload(row["action"], row["payload"]),
            "selection": _summary(row["selection"]),
            "concurrency": int(row["concurrency"]),
            "state": row["state"],
            "total": total,
            "done": done,
            "percent": round(100 * done / total, 1) if total else 100.0,
            "progress": {state: counts.get(state, 0) for state in STATES},
            "created_by": row["created_by"],
            "created_at": _iso(row["created_at"]),
            "finished_at": _iso(row["finished_at"]),
        }

    # ------------------------------------------------------------------ API

    def api_routes(self) -> list[web.RouteDef]:
        p = "/api/v1/bulk-commands"
        return [
            web.get(p, self.api_list),
            web.post(p, self.api_create),
            web.get(f"{p}/{{job_id:\\d+}}", self.api_get),
            web.post(f"{p}/{{job_id:\\d+}}/cancel", self.api_cancel),
        ]

    async def plan(self, body: Any) -> dict[str, Any]:
        """A request body checked and its selection resolved: what create() takes, with
        ``station_ids``; raises ApiError."""
        if not isinstance(body, dict):
            raise ApiError(422, "invalid_body", "the body must be a JSON object")
        unknown = set(body) - {"action", "payload", "selection", "concurrency", "dry_run"}
        if unknown:
            key = sorted(unknown)[0]
            raise ApiError(
                422,
                "invalid_body",
                f"{key}: unknown key",
                fields=[{"field": key, "message": "unknown key"}],
            )
        action, payload = body.get("action"), body.get("payload", {})
        if not isinstance(action, str):
            raise ApiError(422, "invalid_body", "action: the OCPP action, e.g. Reset")
        try:
            check_command(action, payload)
        except CommandError as e:
            raise ApiError(e.http_status, e.code, str(e)) from None
        concurrency = body.get("concurrency", DEFAULT_CONCURRENCY)
        if (
            isinstance(concurrency, bool)
            or not isinstance(concurrency, int)
            or not 1 <= concurrency <= MAX_CONCURRENCY
        ):
            raise ApiError(
                422,
                "invalid_body",
                f"concurrency: a whole number from 1 to {MAX_CONCURRENCY}",
                fields=[{"field": "concurrency", "message": f"1 to {MAX_CONCURRENCY}"}],
            )
        try:
            sel = parse_selection(body.get("selection"))
        except SelectionError as e:
            raise ApiError(
                422, "invalid_selection", str(e), fields=[{"field": e.field, "message": e.message}]
            ) from None
        ids, missing = await self.resolve(sel)
        if missing:
            raise ApiError(
                422,
                "unknown_stations",
                f"{len(missing)} of the listed stations do not exist",
                missing=missing[:20],
            )
        if len(ids) > MAX_STATIONS:
            raise ApiError(
                413,
                "selection_too_large",
                f"the selection means {len(ids)} stations; at most {MAX_STATIONS} per job",
            )
        return {
            "action": action,
            "payload": payload,
            "selection": body["selection"],
            "concurrency": concurrency,
            "station_ids": ids,
        }

    @operation(
        "Send one command to a selection of stations (or preview the selection)",
        tag="bulk commands",
        description=(
            "selection: stations (a list), location, all, filter (firmware_version, vendor, "
            "model, connected, offline_minutes, security_profile); every part given must "
            "hold. dry_run: only the count and the first 50 ids"
        ),
        body=BODY,
        responses={
            200: ok(
                "dry run: what it would reach",
                obj({"dry_run": BOOL, "count": INT, "first": array(STR)}),
            ),
            201: ok("the job, started", JOB),
            404: fails("not an OCPP 1.6 request to a charge point"),
        },
    )
    async def api_create(self, request: web.Request) -> web.Response:
        """Create a job (201), or with ``"dry_run": true`` only say which stations it would
        reach (200: count and the first ids)."""
        if not request.can_read_body:
            raise ApiError(400, "invalid_json", "a JSON body is required")
        try:
            body = await read_json(request)
        except JsonBodyError as e:
            raise ApiError(400, "invalid_json", str(e)) from None
        plan = await self.plan(body)
        ids = plan.pop("station_ids")
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise ApiError(422, "invalid_body", "dry_run: true or false")
        if dry_run:
            return json_response({"dry_run": True, "count": len(ids), "first": ids[:PREVIEW]})
        if not ids:
            raise ApiError(422, "empty_selection", "the selection means no station")
        job_id = await self.create(**plan, station_ids=ids, created_by="api")
        row = await self.repo.get(job_id)
        assert row is not None
        return json_response((await self.views([row]))[0], status=201)

    @operation(
        "The bulk commands, newest first",
        tag="bulk commands",
        query=(
            *PAGING,
            Param("state", {"type": "string", "enum": ["running", "finished", "cancelled"]}),
        ),
        responses={
            200: ok(
                "a page of them",
                obj({"items": array(JOB), "total": INT, "limit": INT, "offset": INT}),
            )
        },
    )
    async def api_list(self, request: web.Request) -> web.Response:
        limit, offset = paging(request)
        state = request.query.get("state") or None
        if state is not None and state not in ("running", "finished", "cancelled"):
            raise ApiError(400, "invalid_query", "state: running, finished or cancelled")
        rows, total = await self.repo.page(limit, offset, state)
        return page_response(await self.views(rows), total, limit, offset)

    async def _job(self, request: web.Request) -> dict[str, Any]:
        try:
            job_id = int(request.match_info["job_id"])
        except ValueError:
            raise ApiError(404, "not_found", "a bulk command id is an integer") from None
        row = await self.repo.get(job_id) if 1 <= job_id < 1 << 62 else None
        if row is None:
            raise ApiError(404, "not_found", f"no bulk command {job_id}")
        return row

    @operation(
        "A bulk command: its progress and a page of its stations' results",
        tag="bulk commands",
        path=JOB_PATH,
        query=(*PAGING, Param("state", {"type": "string", "enum": list(STATES)}, "only these")),
        responses={
            200: ok(
                "the job with stations: {items, total, limit, offset}",
                obj(
                    {
                        "id": INT,
                        "state": STR,
                        "stations": obj({"items": array(obj()), "total": INT}),
                    }
                ),
            )
        },
    )
    async def api_get(self, request: web.Request) -> web.Response:
        """The job, its progress and a page of its stations' results (``?state=`` one)."""
        row = await self._job(request)
        limit, offset = paging(request)
        state = request.query.get("state") or None
        if state is not None and state not in STATES:
            raise ApiError(400, "invalid_query", f"state is one of {', '.join(STATES)}")
        items, total = await self.repo.items(int(row["id"]), state, limit, offset)
        view = (await self.views([row]))[0]
        view["stations"] = {
            "items": [
                {
                    "station_id": i["station_id"],
                    "state": i["state"],
                    "answer": i["answer"],
                    "updated_at": _iso(i["updated_at"]),
                }
                for i in items
            ],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
        return json_response(view)

    @operation(
        "Cancel a running bulk command: its pending stations are not sent to",
        tag="bulk commands",
        path=JOB_PATH,
        responses={200: ok("the job, cancelled", JOB), 409: fails("it is not running")},
    )
    async def api_cancel(self, request: web.Request) -> web.Response:
        row = await self._job(request)
        if not await self.cancel(int(row["id"])):
            raise ApiError(409, "not_running", f"bulk command {row['id']} is {row['state']}")
        fresh = await self.repo.get(int(row["id"]))
        assert fresh is not None
        return json_response((await self.views([fresh]))[0])


def _summary(selection: Any) -> Any:
    """A job's selection as asked, a long list of ids cut to its first 20 (the stations
    themselves are the job's per-station results)."""
    if isinstance(selection, dict) and isinstance(selection.get("stations"), list):
        ids = selection["stations"]
        if len(ids) > 20:
            return {**selection, "stations": ids[:20], "stations_count": len(ids)}
    return selection


def _iso(text: str | None) -> str | None:
    value = from_db(text)
    return to_iso(value) if value else None
