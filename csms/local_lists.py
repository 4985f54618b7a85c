"""Local authorization lists kept in sync with the stations (OCPP 1.6 LocalAuthListManagement).

The list a station should hold (the *desired* list) is csms's id tags that may charge
(Accepted, not expired; with their expiry and parent) followed by what the extensions'
*offline list sources* give (the OCPI bridge: the eMSPs' tokens that may charge offline),
one entry per id tag (case-insensitive, csms's own first), capped at the station's
``LocalAuthListMaxLength``: what does not fit is left out (and counted).

The pure core (:func:`desired_list`, :func:`plan`, :func:`apply`, :func:`judge`) decides;
:class:`LocalListService` does the I/O: one sync at a time per station, a few stations at
once, at boot (after provisioning) and reconnect, when the desired list changes and every
``local_lists.check_interval`` (GetLocalListVersion: a station holding another version gets a
full update). Differential updates go in chunks of at most ``SendLocalListMaxLength``
entries with strictly increasing versions, removals first (the list never grows beyond its
room on the way); a full update too big for one message is a Full with the first chunk,
then Differentials. VersionMismatch or Failed on a differential update: a full one.
NotSupported: the station is marked unsupported and left alone until an operator forces a
sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from .api_common import json_body, page_response, paging
from .clock import Clock
from .commands import (
    CommandError,
    CommandPort,
    ConnectionRegistry,
    StationOffline,
    StationRejected,
)
from .config import Settings
from .events import EventBus, StationConnected, Subscription
from .http import ApiError, json_response
from .openapi import BOOL, INT, PAGING, STR, TIME, array, fails, nullable, obj, ok, operation
from .openapi import page_of as api_page_of
from .repositories.local_lists import LocalListRepository
from .repositories.rows import json_or
from .store import Store
from .timeparse import from_db, to_db, to_ocpp

log = structlog.get_logger("csms.local_lists")

MAX_ID_TAG = 20  # OCPP 1.6 IdToken: CiString20
STATUSES = ("Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx")
LIST_MAX_KEY = "LocalAuthListMaxLength"
SEND_MAX_KEY = "SendLocalListMaxLength"
ENABLED_KEY = "LocalAuthListEnabled"
MAX_VERSION = 2**31 - 1  # (a 32-bit integer on most chargers)
LEFT_OUT_SHOWN = 20
DEBOUNCE = 0.2  # seconds between a change told and the list read again
MAX_STEPS_PER_RUN = 2_000  # (bounds a run; the list's size bounds it long before)

# an extension's offline list source: the entries it wants on every station, at most
# ``limit`` of them, in order of preference (the first are kept when room is short)
OfflineListSource = Callable[[int], Awaitable[Sequence["Entry"]]]


# ---------------------------------------------------------------------------- the core


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a local authorization list: an id tag and its IdTagInfo."""

    id_tag: str
    status: str = "Accepted"
    expiry: datetime | None = None
    parent: str | None = None

    @property
    def key(self) -> str:
        return self.id_tag.casefold()

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.expiry is not None:
            out["expiryDate"] = to_ocpp(self.expiry)
        if self.parent:
            out["parentIdTag"] = self.parent
        return out

    def to_json(self) -> list[Any]:
        return [self.id_tag, self.status, to_db(self.expiry) if self.expiry else None, self.parent]

    @classmethod
    def from_json(cls, item: Any) -> Entry | None:
        if not (isinstance(item, list) and len(item) == 4 and isinstance(item[0], str)):
            return None
        return cls(item[0], str(item[1]), from_db(item[2]) if item[2] else None, item[3] or None)


def usable(entry: Entry) -> bool:
    """An entry a station can hold: an id tag of 1..20 characters, a known status."""
    return 0 < len(entry.id_tag) <= MAX_ID_TAG and entry.status in STATUSES


def desired_list(own: Iterable[Entry], offline: Iterable[Entry], now: datetime) -> list[Entry]:
    """The list every station should hold, in order of preference: csms's own id tags that
    may charge (Accepted, not expired), then the offline sources' entries; one per id tag
    (case-insensitive, the first kept). A parent id tag longer than 20 characters is
    dropped (the entry stays)."""
    out: dict[str, Entry] = {}
    for source, mine in ((own, True), (offline, False)):
        for e in source:
            if not usable(e) or e.key in out:
                continue
            if mine and (e.status != "Accepted" or (e.expiry is not None and e.expiry <= now)):
                continue
            if e.parent is not None and not 0 < len(e.parent) <= MAX_ID_TAG:
                e = Entry(e.id_tag, e.status, e.expiry, None)
            out[e.key] = e
    return list(out.values())


def capped(desired: Sequence[Entry], list_max: int | None) -> tuple[list[Entry], list[Entry]]:
    """What fits in a station's list (the first ``list_max``) and what is left out."""
    if list_max is None or len(desired) <= list_max:
        return list(desired), []
    room = max(0, list_max)
    return list(desired[:room]), list(desired[room:])


@dataclass(frozen=True, slots=True)
class Step:
    """One SendLocalList request: its update type, version and entries (an entry without
    info, ``(id_tag, None)``, removes that id tag)."""

    update_type: str  # Full | Differential
    version: int
    changes: tuple[tuple[str, Entry | None], ...]

    def payload(self) -> dict[str, Any]:
        items: list[dict[str, Any]] = []
        for id_tag, entry in self.changes:
            item: dict[str, Any] = {"idTag": id_tag}
            if entry is not None:
                item["idTagInfo"] = entry.info()
            items.append(item)
        out: dict[str, Any] = {"listVersion": self.version, "updateType": self.update_type}
        if items:
            out["localAuthorizationList"] = items
        return out


def differences(
    desired: Sequence[Entry], acked: Mapping[str, Entry]
) -> tuple[list[tuple[str, None]], list[tuple[str, Entry]]]:
    """What the station lacks: removals (in the acknowledged list, not desired), then
    additions and changes."""
    wanted = {e.key: e for e in desired}
    removes = [(e.id_tag, None) for k, e in acked.items() if k not in wanted]
    upserts = [(e.id_tag, e) for e in desired if acked.get(e.key) != e]
    return removes, upserts


def plan(
    desired: Sequence[Entry],
    acked: Mapping[str, Entry] | None,
    *,
    full: bool,
    next_version: int,
    send_max: int,
) -> list[Step]:
    """The SendLocalList requests that bring a station holding ``acked`` (None: unknown) to
    ``desired`` (already capped): a full update when asked or when nothing is known, else
    differential ones; at most ``send_max`` entries each, versions from ``next_version`` up.
    Nothing to send: no step."""
    size = max(1, send_max)
    version = next_version
    if full or acked is None:
        items = [(e.id_tag, e) for e in desired]
        steps = [Step("Full", version, tuple(items[:size]))]
        rest: list[tuple[str, Entry | None]] = list(items[size:])
    else:
        removes, upserts = differences(desired, acked)
        rest = [*removes, *upserts]
        steps = []
        version -= 1
    for i in range(0, len(rest), size):
        version += 1
        steps.append(Step("Differential", version, tuple(rest[i : i + size])))
    return steps


def apply(acked: Mapping[str, Entry] | None, step: Step) -> dict[str, Entry]:
    """The list a station holds once it accepted ``step``."""
    out = {} if step.update_type == "Full" or acked is None else dict(acked)
    for id_tag, entry in step.changes:
        if entry is None:
            out.pop(id_tag.casefold(), None)
        else:
            out[entry.key] = entry
    return out


def next_version(*versions: int | None) -> int:
    """A version above every one known (1 when none; back to 1 beyond 32 bits, which
    makes the next sync a full one)."""
    top = max((v for v in versions if v is not None and v > 0), default=0)
    return top + 1 if top < MAX_VERSION else 1


def judge(update_type: str, answer: Any) -> str:
    """What a SendLocalList answer means: ``accepted``; ``full`` (send a full update: a
    VersionMismatch, or a differential update that Failed); ``failed`` (a full update
    Failed); ``unsupported`` (NotSupported); ``invalid`` (not an answer)."""
    status = answer.get("status") if isinstance(answer, dict) else None
    if status == "Accepted":
        return "accepted"
    if status == "NotSupported":
        return "unsupported"
    if status == "VersionMismatch":
        return "full"
    if status == "Failed":
        return "full" if update_type == "Differential" else "failed"
    return "invalid"


def read_lengths(
    snapshot: Iterable[Any] | None, default_send_max: int
) -> tuple[int | None, int, bool | None]:
    """LocalAuthListMaxLength (None: not reported), SendLocalListMaxLength (the default
    when not reported) and LocalAuthListEnabled (None: not reported) from GetConfiguration's
    ``configurationKey`` list."""
    values: dict[str, str] = {}
    for item in snapshot or ():
        if isinstance(item, dict) and isinstance(item.get("key"), str):
            values[item["key"]] = str(item.get("value") or "").strip()

    def number(key: str) -> int | None:
        text = values.get(key, "")
        return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None

    enabled = values.get(ENABLED_KEY, "").lower()
    send_max = number(SEND_MAX_KEY)
    return (
        number(LIST_MAX_KEY),
        send_max if send_max else default_send_max,
        {"true": True, "false": False}.get(enabled),
    )


def list_hash(entries: Iterable[Entry]) -> str:
    text = json.dumps([e.to_json() for e in entries], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def decode_entries(text: str | None) -> dict[str, Entry] | None:
    items = json_or(text)
    if not isinstance(items, list):
        return None
    out: dict[str, Entry] = {}
    for item in items:
        e = Entry.from_json(item)
        if e is not None:
            out[e.key] = e
    return out


def not_implemented(error: StationRejected) -> bool:
    """A CallError that says the station has no such feature (not a passing failure)."""
    return error.error.code in ("NotImplemented", "NotSupported")


# ---------------------------------------------------------------------------- the shell

STATES = ("new", "pending", "synced", "error", "unsupported", "disabled_on_station")
LOCAL_LIST = obj(
    {
        "station_id": STR,
        "enabled": BOOL,
        "state": {"type": "string", "enum": list(STATES)},
        "connected": BOOL,
        "version": nullable(INT),
        "version_sent": nullable(INT),
        "acked_count": INT,
        "desired_count": INT,
        "pending_adds": INT,
        "pending_removes": INT,
        "pending_add_tags": array(STR, max_items=LEFT_OUT_SHOWN),
        "pending_remove_tags": array(STR, max_items=LEFT_OUT_SHOWN),
        "local_auth_list_max_length": nullable(INT),
        "send_local_list_max_length": nullable(INT),
        "left_out": INT,
        "left_out_tags": array(STR, max_items=LEFT_OUT_SHOWN),
        "last_sync_at": nullable(TIME),
        "last_attempt_at": nullable(TIME),
        "error": nullable(STR),
    },
    description="a station's local authorization list as csms keeps it",
)


class SyncFailed(Exception):
    """A sync that did not finish (retried later)."""


@dataclass
class _Wanted:
    check: bool = False  # read lengths and GetLocalListVersion first
    full: bool = False  # a full update whatever the station holds
    forced: bool = False  # by an operator: also a station marked unsupported


class LocalListService:
    """Keeps every connected station's local list in sync (see the module's docstring)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: Settings,
        registry: ConnectionRegistry,
        commands: CommandPort,
        bus: EventBus,
    ) -> None:
        self.store = store
        self.clock = clock
        self.cfg = settings.local_lists
        self.registry = registry
        self.commands = commands
        self.bus = bus
        self.repo = LocalListRepository(store.db, clock)
        self.sources: list[tuple[str, OfflineListSource]] = []
        self._desired: list[Entry] | None = None
        self._desired_hash: str | None = None
        self._wanted: dict[str, _Wanted] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._checked: dict[str, datetime] = {}
        self._sem = asyncio.Semaphore(self.cfg.concurrency)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sub: Subscription | None = None
        self._running = False
        self._reading = asyncio.Lock()
        store.id_tags.on_change.append(self.changed)

    # ------------------------------------------------------------------ what others call

    def add_source(self, name: str, source: OfflineListSource) -> None:
        self.sources.append((name, source))

    def changed(self) -> None:
        """The desired list may have changed (an extension's tokens): read it again now."""
        self._wake.set()

    def station_ready(self, station_id: str) -> None:
        """A station booted (and was provisioned): check its list."""
        self._checked.pop(station_id, None)
        self.request(station_id, check=True)

    def request(
        self, station_id: str, *, check: bool = False, full: bool = False, forced: bool = False
    ) -> None:
        """Sync this station soon (one sync at a time per station; requests merge)."""
        if not self._running:
            return
        w = self._wanted.setdefault(station_id, _Wanted())
        w.check |= check
        w.full |= full
        w.forced |= forced
        worker = self._workers.get(station_id)
        if worker is None or worker.done():
            self._workers[station_id] = asyncio.create_task(
                self._worker(station_id), name=f"local-list:{station_id}"
            )

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        self._running = True
        self._sub = self.bus.subscribe("local-lists", maxsize=10_000, kinds=(StationConnected,))
        self._tasks = [
            asyncio.create_task(self._loop(), name="local-lists"),
            asyncio.create_task(self._events(), name="local-lists-events"),
        ]

    async def stop(self) -> None:
        self._running = False
        tasks = [*self._tasks, *self._workers.values()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        self._workers.clear()
        if self._sub is not None:
            self.bus.unsubscribe(self._sub)
            self._sub = None

    async def _events(self) -> None:
        assert self._sub is not None
        while True:
            event = await self._sub.get()
            if isinstance(event, StationConnected):
                task = asyncio.create_task(self._after_reconnect(event.station_id))
                self._tasks.append(task)
                self._tasks = [t for t in self._tasks if not t.done() or t is task]

    async def _after_reconnect(self, station_id: str) -> None:
        """A station that reconnects without booting is checked after a short delay (one
        that boots is checked once provisioned)."""
        await self.clock.sleep(self.cfg.reconnect_delay)
        conn = self.registry.get(station_id)
        if conn is not None and not conn.booted:
            row = await self.store.stations.snapshot_row(station_id)
            if row is not None and row.get("first_boot_at"):
                self.request(station_id, check=True)

    async def _loop(self) -> None:
        """Re-read the desired list when told or every ``recompute_interval``; sync the
        stations it changed for; check each connected station every ``check_interval``."""
        while True:
            self._wake.clear()  # (a change told from here on wakes the next nap)
            try:
                await self._refresh_desired()
                await self._periodic_checks()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("local lists: desired list not read")
            await self._nap(self.cfg.recompute_interval)
            # (changes come in bursts, an eMSP pushing its tokens: read once they settle)
            await asyncio.sleep(DEBOUNCE)

    async def _nap(self, seconds: float) -> None:
        waiter = asyncio.create_task(self._wake.wait())
        sleeper = asyncio.create_task(self.clock.sleep(seconds))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (waiter, sleeper):
                t.cancel()

    async def _periodic_checks(self) -> None:
        now = self.clock.now()
        every = self.cfg.check_interval
        due = [
            c.station_id
            for c in self.registry.all()
            if (at := self._checked.get(c.station_id)) is not None
            and (now - at).total_seconds() >= every
        ]
        for sid in due[:1000]:
            self.request(sid, check=True)

    # ------------------------------------------------------------------ the desired list

    async def desired(self) -> list[Entry]:
        if self._desired is None:
            await self._refresh_desired()
        return list(self._desired or [])

    async def _refresh_desired(self) -> bool:
        """Read the desired list again; when it changed (True), sync every connected
        station (each compares it with what it acknowledged)."""
        async with self._reading:
            changed = await self._read_desired()
        if changed:
            for conn in self.registry.all():
                self.request(conn.station_id)
        return changed

    async def _read_desired(self) -> bool:
        limit = self.cfg.max_entries
        rows = await self.repo.id_tags_that_may_charge(self.clock.now(), limit)
        own = [
            Entry(r["id_tag"], r["status"], from_db(r["expiry_date"]), r["parent_id_tag"])
            for r in rows
        ]
        offline: list[Entry] = []
        for name, source in self.sources:
            try:
                got = await asyncio.wait_for(source(limit), 30)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("offline list source failed: its part is kept", source=name)
                # (keep what it gave last time rather than wipe its tokens from stations)
                return False
            offline.extend(list(got)[:limit])
        desired = desired_list(own, offline, self.clock.now())[:limit]
        digest = list_hash(desired)
        if digest == self._desired_hash:
            return False
        self._desired, self._desired_hash = desired, digest
        log.info("local list: desired list changed", entries=len(desired))
        return True

    # ------------------------------------------------------------------ one station

    async def enabled(self, station_id: str, row: dict[str, Any] | None = None) -> bool:
        if row is None:
            row = await self.repo.get(station_id)
        return bool(row["enabled"]) if row is not None else self.cfg.enabled_by_default

    async def _worker(self, station_id: str) -> None:
        attempt = 0
        while station_id in self._wanted:
            wanted = self._wanted.pop(station_id)
            if not self.registry.is_connected(station_id):
                return
            try:
                async with self._sem:
                    await self.sync(station_id, wanted)
                attempt = 0
            except asyncio.CancelledError:
                raise
            except StationOffline:
                return  # (checked again when it is back)
            except (SyncFailed, CommandError) as e:
                attempt += 1
                await self._note_error(station_id, str(e))
                if attempt > 8:
                    log.warning("local list: giving up until the next check", station_id=station_id)
                    return
                delay = min(self.cfg.retry_max, self.cfg.retry_min * 2 ** (attempt - 1))
                await self.clock.sleep(delay)
                w = self._wanted.setdefault(station_id, _Wanted())
                w.check |= wanted.check
                w.full |= wanted.full
                w.forced |= wanted.forced
            except Exception as e:
                log.exception("local list sync failed", station_id=station_id)
                await self._note_error(station_id, f"internal error: {type(e).__name__}")
                return

    async def _note_error(self, station_id: str, error: str) -> None:
        with contextlib.suppress(Exception):
            await self.repo.update(
                station_id,
                self.cfg.enabled_by_default,
                state="error",
                last_error=error[:500],
                last_attempt_at=to_db(self.clock.now()),
            )

    async def _send(self, station_id: str, action: str, payload: dict[str, Any]) -> Any:
        return await self.commands.send(station_id, action, payload, origin="local_list")

    async def sync(self, station_id: str, wanted: _Wanted) -> None:
        """One sync of one station (see the module's docstring)."""
        row = await self.repo.get(station_id)
        if not await self.enabled(station_id, row):
            return
        state = row["state"] if row else "new"
        if state == "unsupported" and not wanted.forced:
            return
        if state == "disabled_on_station" and not (wanted.check or wanted.forced):
            return  # (until its next check finds it enabled)
        default = self.cfg.enabled_by_default
        now = self.clock.now()
        update: dict[str, Any] = {"last_attempt_at": to_db(now)}
        acked = decode_entries(row["entries"]) if row else None
        acked_version = row["version_acked"] if row else None
        list_max = row["list_max"] if row else None
        send_max = row["send_max"] if row else None
        full = wanted.full or bool(row and row["full_wanted"])
        station_version: int | None = None
        if wanted.check or send_max is None:
            self._checked[station_id] = now
            await self._refresh_desired()  # (a check works on what is true now)
            list_max, send_max, on = await self._lengths(station_id)
            update.update(list_max=list_max, send_max=send_max)
            try:
                answer = await self._send(station_id, "GetLocalListVersion", {})
            except StationRejected as e:
                if not not_implemented(e):
                    raise SyncFailed(f"GetLocalListVersion: {e}") from None
                return await self._unsupported(station_id, f"GetLocalListVersion: {e}", update)
            raw = answer.get("listVersion") if isinstance(answer, dict) else None
            if not isinstance(raw, int):
                raise SyncFailed("GetLocalListVersion: no listVersion in the answer")
            station_version = raw
            if raw < 0 or on is False:
                await self.repo.update(
                    station_id,
                    default,
                    **update,
                    state="disabled_on_station",
                    last_error="the station's local list is disabled (LocalAuthListEnabled)",
                )
                return
            if acked is None or raw != acked_version:
                if acked is not None:
                    log.info(
                        "local list: the station holds another version: full update",
                        station_id=station_id,
                        station_version=raw,
                        ours=acked_version,
                    )
                full = True
        desired, left_out = capped(await self.desired(), list_max)
        assert send_max is not None
        version = next_version(acked_version, row["version_sent"] if row else None, station_version)
        steps = plan(desired, acked, full=full, next_version=version, send_max=send_max)
        if not steps and not wanted.check and row is not None and row["state"] == "synced":
            if row["left_out"] == len(left_out):
                return  # (nothing to send, nothing new to record)
        retried = False
        done = 0
        while steps:
            step = steps.pop(0)
            done += 1
            if done > MAX_STEPS_PER_RUN:
                raise SyncFailed("too many updates in one sync")
            await self.repo.update(station_id, default, version_sent=step.version)
            try:
                answer = await self._send(station_id, "SendLocalList", step.payload())
            except StationRejected as e:
                if not not_implemented(e):
                    raise SyncFailed(f"SendLocalList: {e}") from None
                return await self._unsupported(station_id, f"SendLocalList: {e}", update)
            verdict = judge(step.update_type, answer)
            if verdict == "accepted":
                acked = apply(acked, step)
                acked_version = step.version
                await self.repo.update(
                    station_id,
                    default,
                    version_acked=step.version,
                    entries=[e.to_json() for e in acked.values()],
                    entries_count=len(acked),
                    full_wanted=False,
                    state="pending",  # ("synced" once the run is over, below)
                )
                continue
            if verdict == "unsupported":
                return await self._unsupported(station_id, "SendLocalList: NotSupported", update)
            if verdict == "full" and not retried:
                retried = True
                log.info(
                    "local list: full update after an answer",
                    station_id=station_id,
                    answer=answer.get("status") if isinstance(answer, dict) else None,
                )
                steps = plan(
                    desired,
                    None,
                    full=True,
                    next_version=next_version(step.version),
                    send_max=send_max,
                )
                continue
            await self.repo.update(station_id, default, full_wanted=True)
            status = answer.get("status") if isinstance(answer, dict) else answer
            raise SyncFailed(f"SendLocalList {step.update_type} answered {status}")
        await self.repo.update(
            station_id,
            default,
            **update,
            state="synced",
            left_out=len(left_out),
            last_sync_at=to_db(self.clock.now()),
            last_error=None,
        )

    async def _unsupported(self, station_id: str, why: str, update: dict[str, Any]) -> None:
        log.warning("local list: not supported by the station", station_id=station_id, why=why)
        await self.repo.update(
            station_id, self.cfg.enabled_by_default, **update, state="unsupported", last_error=why
        )

    async def _lengths(self, station_id: str) -> tuple[int | None, int, bool | None]:
        """The station's list lengths: from what provisioning read (GetConfiguration),
        else asked with GetConfiguration for those keys."""
        row = await self.store.stations.snapshot_row(station_id)
        snapshot = json_or(row["config_snapshot"]) if row else None
        found = read_lengths(snapshot if isinstance(snapshot, list) else None, 0)
        if found[0] is not None and found[1]:
            return found
        try:
            answer = await self._send(
                station_id, "GetConfiguration", {"key": [LIST_MAX_KEY, SEND_MAX_KEY, ENABLED_KEY]}
            )
        except StationRejected:
            answer = None
        keys = answer.get("configurationKey") if isinstance(answer, dict) else None
        return read_lengths(keys if isinstance(keys, list) else None, self.cfg.default_send_max)

    # ------------------------------------------------------------------ what is shown

    async def view(self, station_id: str, row: dict[str, Any] | None) -> dict[str, Any]:
        """A station's list as the API and the web page show it (``row``: its row as
        read, None when it has none)."""
        enabled = bool(row["enabled"]) if row and row["station_id"] else self.cfg.enabled_by_default
        acked = decode_entries(row["entries"]) if row and row["station_id"] else None
        list_max = row["list_max"] if row and row["station_id"] else None
        desired, left_out = capped(await self.desired(), list_max)
        removes, upserts = differences(desired, acked or {}) if enabled else ([], [])

        def t(key: str) -> str | None:
            value = from_db(row[key]) if row and row.get(key) else None
            return to_ocpp(value) if value else None

        return {
            "station_id": station_id,
            "enabled": enabled,
            "state": (row["state"] if row and row["state"] else "new"),
            "connected": self.registry.is_connected(station_id),
            "version": row["version_acked"] if row else None,
            "version_sent": row["version_sent"] if row else None,
            "acked_count": len(acked) if acked is not None else 0,
            "desired_count": len(desired),
            "pending_adds": len(upserts),
            "pending_removes": len(removes),
            "pending_add_tags": [tag for tag, _ in upserts[:LEFT_OUT_SHOWN]],
            "pending_remove_tags": [tag for tag, _ in removes[:LEFT_OUT_SHOWN]],
            "local_auth_list_max_length": list_max,
            "send_local_list_max_length": row["send_max"] if row else None,
            "left_out": len(left_out),
            "left_out_tags": [e.id_tag for e in left_out[:LEFT_OUT_SHOWN]],
            "last_sync_at": t("last_sync_at"),
            "last_attempt_at": t("last_attempt_at"),
            "error": row["last_error"] if row else None,
        }

    async def set_enabled(self, station_id: str, enabled: bool) -> None:
        await self.repo.update(station_id, self.cfg.enabled_by_default, enabled=enabled)
        if enabled:
            self.request(station_id, check=True)

    # ------------------------------------------------------------------ operator API

    def api_routes(self) -> list[web.RouteDef]:
        p = "/api/v1"
        return [
            web.get(f"{p}/local-lists", self.api_list),
            web.get(f"{p}/stations/{{station_id}}/local-list", self.api_get),
            web.put(f"{p}/stations/{{station_id}}/local-list", self.api_put),
            web.post(f"{p}/stations/{{station_id}}/local-list/sync", self.api_sync),
        ]

    async def _station_or_404(self, request: web.Request) -> str:
        sid = request.match_info["station_id"]
        if len(sid) > 255 or await self.store.stations.snapshot_row(sid) is None:
            raise ApiError(404, "not_found", f"no station {sid[:255]!r}")
        return sid

    @operation(
        "Local authorization lists, per station",
        tag="local-lists",
        description="every station in id order, with its list as csms keeps it",
        query=PAGING,
        responses={200: ok("a page of stations' lists", api_page_of(LOCAL_LIST))},
    )
    async def api_list(self, request: web.Request) -> web.Response:
        limit, offset = paging(request)
        rows, total = await self.repo.page(limit, offset)
        items = [await self.view(r["id"], r if r["station_id"] else None) for r in rows]
        return page_response(items, total, limit, offset)

    @operation(
        "A station's local authorization list",
        tag="local-lists",
        responses={200: ok("the station's list", LOCAL_LIST)},
    )
    async def api_get(self, request: web.Request) -> web.Response:
        sid = await self._station_or_404(request)
        return json_response(await self.view(sid, await self.repo.get(sid)))

    @operation(
        "Switch csms's management of a station's local list on or off",
        tag="local-lists",
        body=obj({"enabled": BOOL}, extra=False),
        responses={200: ok("the station's list", LOCAL_LIST)},
    )
    async def api_put(self, request: web.Request) -> web.Response:
        sid = await self._station_or_404(request)
        body = await json_body(request)
        if not (isinstance(body, dict) and set(body) == {"enabled"}):
            raise ApiError(422, "invalid_body", 'the body is {"enabled": true|false}')
        if not isinstance(body["enabled"], bool):
            raise ApiError(
                422,
                "invalid_body",
                "enabled must be true or false",
                fields=[{"field": "enabled", "message": "must be true or false"}],
            )
        await self.set_enabled(sid, body["enabled"])
        log.info("local list switched", station_id=sid, enabled=body["enabled"])
        return json_response(await self.view(sid, await self.repo.get(sid)))

    @operation(
        "Send a station its whole local list now (a full update)",
        tag="local-lists",
        description="also of a station marked unsupported; the update runs in the background",
        responses={
            202: ok("the update is under way: the station's list", LOCAL_LIST),
            409: fails("the station's list is off (disabled) or it is not connected"),
        },
    )
    async def api_sync(self, request: web.Request) -> web.Response:
        sid = await self._station_or_404(request)
        row = await self.repo.get(sid)
        if not await self.enabled(sid, row):
            raise ApiError(409, "disabled", "the station's local list is off: PUT enabled first")
        if not self.registry.is_connected(sid):
            raise ApiError(409, "station_offline", f"station {sid} is not connected")
        await self.force(sid)
        return json_response(await self.view(sid, await self.repo.get(sid)), status=202)

    async def force(self, station_id: str) -> None:
        """An operator's full update (also of a station marked unsupported)."""
        await self.repo.update(
            station_id, self.cfg.enabled_by_default, full_wanted=True, state="pending"
        )
        self.request(station_id, check=True, full=True, forced=True)
