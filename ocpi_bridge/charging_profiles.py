"""OCPI 2.2.1 ChargingProfiles, the CPO as Receiver (section 12): a smart charging party sets,
reads and clears the limit of a running session.

Who may: only a peer the operator granted the role SCSP (a token A made with ``--role SCSP``);
a peer's powers are the operator's decision, never its credentials' claim. The module is
listed in our version details only to such a peer, and only while an extension offers csms's
session limits (``port.charging_limits``, looked up at each request: extensions attach in
turn); without them the answer is NOT_SUPPORTED. MOBI.E's profile has no ChargingProfiles:
MOBI.E, granted HUB, is refused like any peer without SCSP.

Which sessions: every running session of this CPO. OCPI 2.2.1 does not tie a charging profile
to the eMSP of the session's token (the SCSP is a party of its own, whom the CPO chose to work
with) and the operator granted the role, so the grant is the permission: the session id only
has to be one of our running transactions. One that is unknown, over, or at a station that is
no longer defined is UNKNOWN_SESSION.

How: like commands, a request is validated (OCPI 2001 naming the field), answered at once with
a ChargingProfileResponse (ACCEPTED, and the timeout within which its result comes), and only
then carried out through the session limits (smart charging sends the station a TxProfile
capped by its site's share: a party never lifts a session above what the site allows). The
result (ChargingProfileResult, ActiveChargingProfileResult, ClearProfileResult) is POSTed to
the request's ``response_url``, retried with backoff a bounded number of times. Results are
kept in memory only: a restart loses those not delivered yet, which the peer sees as its
timeout passing (it may ask again).

Bounds, so that no peer can grow anything: one peer may send one kind of request (set, get,
clear) for one session at most once every ``ocpi.charging_profile_interval`` seconds (10 by
default; faster is TOO_OFTEN); at most MAX_IN_FLIGHT requests are carried out at once (beyond,
REJECTED); a profile has at most MAX_PERIODS periods.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from csms.ports import ChargingLimits, SessionSchedule, TransactionView

from .client import OcpiCallFailed
from .schemas import Url, parse
from .store import Peer
from .transport import INVALID_PARAMETERS, OcpiError, ocpi_time, parse_ocpi_time

if TYPE_CHECKING:
    from .context import BridgeContext

log = structlog.get_logger("ocpi.chargingprofiles")

SCSP = "SCSP"  # the grant that opens this module
MAX_PERIODS = 100  # periods in one profile (stations take far fewer; see smartcharge)
MAX_SECONDS = 2**31 - 1  # start_period and duration: OCPP's integers
MAX_LIMIT = 1_000_000_000  # W or A: far above any connection, below float trouble
MAX_GET_DURATION = 86_400  # seconds of schedule a GET may ask for (a day)
MAX_IN_FLIGHT = 1000  # requests being carried out or their results delivered, at once
MAX_PACED = 10_000  # (peer, session, kind) remembered for TOO_OFTEN, at once
DELIVERY_ATTEMPTS = 6  # a result is POSTed this many times at most, 1, 2, 4, 8, 16 s apart
RETRY_MAX_SECONDS = 30.0
ONE_DECIMAL = Decimal("0.1")

Kind = Literal["set", "get", "clear"]


# ---------------------------------------------------------------------------- what peers send


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ChargingProfilePeriod(_Body):
    start_period: int = Field(ge=0, le=MAX_SECONDS)
    limit: float = Field(ge=0, le=MAX_LIMIT, allow_inf_nan=False)


class ChargingProfile(_Body):
    start_date_time: str | None = None
    duration: int | None = Field(None, ge=1, le=MAX_SECONDS)
    charging_rate_unit: Literal["W", "A"]
    min_charging_rate: float | None = Field(None, ge=0, le=MAX_LIMIT, allow_inf_nan=False)
    charging_profile_period: list[ChargingProfilePeriod] = Field(
        min_length=1, max_length=MAX_PERIODS
    )

    @field_validator("start_date_time")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        return None if v is None else ocpi_time(parse_ocpi_time(v))

    @model_validator(mode="after")
    def _increasing(self) -> ChargingProfile:
        starts = [p.start_period for p in self.charging_profile_period]
        if starts[0] != 0:
            raise ValueError("charging_profile_period: the first start_period must be 0")
        if any(b <= a for a, b in itertools.pairwise(starts)):
            raise ValueError("charging_profile_period: start_period must increase")
        return self


class SetChargingProfile(_Body):
    charging_profile: ChargingProfile
    response_url: Url


# ---------------------------------------------------------------------------- pure core


def transaction_id_of(session_id: str) -> int | None:
    """The transaction behind one of our session ids (ASCII digits of a 64-bit integer);
    None for anything else, which can be no session of ours."""
    if session_id.isascii() and session_id.isdigit() and len(session_id) < 19:
        return int(session_id)
    return None


def check_session_id(session_id: str) -> None:
    """A session id is a CiString(36): printable ASCII. Raises OcpiError 2001."""
    if not 1 <= len(session_id) <= 36 or not all(" " <= c <= "~" for c in session_id):
        raise OcpiError(INVALID_PARAMETERS, "session_id: a CiString of 1 to 36 characters")


def schedule_of(profile: ChargingProfile) -> SessionSchedule:
    """A peer's ChargingProfile as csms's SessionSchedule. Limits keep one decimal, cut
    down (never above what the party asked)."""
    return SessionSchedule(
        unit=profile.charging_rate_unit,
        periods=tuple(
            (p.start_period, _one_decimal(p.limit)) for p in profile.charging_profile_period
        ),
        start=None if profile.start_date_time is None else parse_ocpi_time(profile.start_date_time),
        duration=profile.duration,
        min_rate=(
            None if profile.min_charging_rate is None else _one_decimal(profile.min_charging_rate)
        ),
    )


def _one_decimal(value: float | Decimal) -> Decimal:
    return Decimal(str(value)).quantize(ONE_DECIMAL, ROUND_DOWN)


def active_profile(schedule: SessionSchedule, now: datetime) -> dict[str, Any] | None:
    """The ActiveChargingProfile of what a station applies (its composite schedule); None
    when it is not one OCPI can say (a unit other than A or W, no period, a bad number)."""
    if schedule.unit not in ("A", "W") or not schedule.periods:
        return None
    periods = []
    for start, limit in schedule.periods:
        value = Decimal(str(limit))
        if not value.is_finite() or value < 0 or start < 0:
            return None
        periods.append({"start_period": int(start), "limit": float(_one_decimal(value))})
    start_at = ocpi_time(schedule.start or now)
    profile: dict[str, Any] = {
        "start_date_time": start_at,
        "charging_rate_unit": schedule.unit,
        "charging_profile_period": periods,
    }
    if schedule.duration is not None:
        profile["duration"] = int(schedule.duration)
    if schedule.min_rate is not None:
        profile["min_charging_rate"] = float(_one_decimal(schedule.min_rate))
    return {"start_date_time": start_at, "charging_profile": profile}


def result_word(answer: Any) -> str:
    """The limits' answer in ChargingProfileResultType: ACCEPTED, REJECTED or UNKNOWN
    (anything else is a refusal)."""
    return answer if answer in ("ACCEPTED", "REJECTED", "UNKNOWN") else "REJECTED"


def duration_of(query: Mapping[str, str]) -> int:
    """The ``duration`` of a GET: whole seconds, 1 to MAX_GET_DURATION. Raises 2001."""
    text = query.get("duration")
    if text is None:
        raise OcpiError(INVALID_PARAMETERS, "duration: required (seconds)")
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise OcpiError(INVALID_PARAMETERS, "duration: whole seconds")
    value = int(text)
    if not 1 <= value <= MAX_GET_DURATION:
        raise OcpiError(INVALID_PARAMETERS, f"duration: 1 to {MAX_GET_DURATION} seconds")
    return value


def response_url_of(query: Mapping[str, str]) -> str:
    """The ``response_url`` of a GET or DELETE: an http(s) URL of at most 255 characters.
    Raises 2001."""
    url = query.get("response_url")
    if url is None:
        raise OcpiError(INVALID_PARAMETERS, "response_url: required")
    if len(url) > 255 or not url.startswith(("http://", "https://")) or not url.isprintable():
        raise OcpiError(INVALID_PARAMETERS, "response_url: an http(s) URL, 255 characters at most")
    if any(c.isspace() for c in url):
        raise OcpiError(INVALID_PARAMETERS, "response_url: an http(s) URL without spaces")
    return url


class Pacer:
    """TOO_OFTEN: when each (peer, session, kind) was last accepted. Facts and ``now`` in,
    a verdict out; it forgets what is older than the interval, and remembers at most
    ``room`` keys (beyond, everyone waits: nothing grows)."""

    def __init__(self, interval: float, room: int = MAX_PACED) -> None:
        self.interval = timedelta(seconds=interval)
        self.room = room
        self._last: dict[tuple[int, str, str], datetime] = {}

    def allow(self, key: tuple[int, str, str], now: datetime) -> bool:
        """True (and remembered) when ``key`` was not accepted within the interval."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval and now >= last:
            return False
        if key not in self._last and len(self._last) >= self.room:
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
            if len(self._last) >= self.room:
                return False
        if self.interval > timedelta(0):
            self._last[key] = now
        return True


@dataclass(frozen=True)
class Request:
    """One accepted request, as it is carried out and answered."""

    kind: Kind
    peer_id: int
    party: tuple[str, str]
    session_id: str
    transaction_id: int
    response_url: str


# ---------------------------------------------------------------------------- the shell


class ChargingProfiles:
    """The module's requests: answered at once, carried out in the background through
    ``port.charging_limits``, their results POSTed to the peers' ``response_url``."""

    def __init__(self, bridge: BridgeContext) -> None:
        self.bridge = bridge
        self.clock = bridge.clock
        self.pacer = Pacer(bridge.settings.charging_profile_interval)
        self.timeout = bridge.settings.charging_profile_timeout
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def limits(self) -> ChargingLimits | None:
        """The session limits csms's extensions offer now (None: no smart charging)."""
        return self.bridge.csms.charging_limits

    def offered_to(self, grant_role: str | None) -> bool:
        """Is the module listed (version details) for a caller granted ``grant_role``?"""
        return grant_role == SCSP and self.limits is not None

    @staticmethod
    def check_allowed(peer: Peer) -> None:
        """Only a peer granted SCSP may use the module (HTTP 403, OCPI 2000 otherwise)."""
        if peer.grant_role != SCSP:
            raise OcpiError(
                2000,
                "chargingprofiles is for a smart charging party: the operator has not "
                f"granted you SCSP (granted: {peer.grant_role or 'nothing'})",
                http_status=403,
            )

    # ------------------------------------------------------------------ receiving

    async def set(
        self, peer: Peer, party: tuple[str, str], session_id: str, body: Any
    ) -> dict[str, Any]:
        """PUT: a SetChargingProfile; answers a ChargingProfileResponse."""
        check_session_id(session_id)
        req: SetChargingProfile = parse(SetChargingProfile, body)
        self._check_target(req.response_url)
        schedule = schedule_of(req.charging_profile)
        origin = f"ocpi:{party[0]}/{party[1]}"

        async def work(limits: ChargingLimits, tx_id: int) -> dict[str, Any]:
            answer = await limits.set_session_limit(tx_id, schedule, origin)
            return {"result": result_word(answer)}

        periods = len(schedule.periods)
        return await self._accept(
            "set", peer, party, session_id, req.response_url, work, periods=periods
        )

    async def get(
        self, peer: Peer, party: tuple[str, str], session_id: str, query: Mapping[str, str]
    ) -> dict[str, Any]:
        """GET: the session's ActiveChargingProfile, to come; answers at once."""
        check_session_id(session_id)
        duration = duration_of(query)
        url = response_url_of(query)
        self._check_target(url)

        async def work(limits: ChargingLimits, tx_id: int) -> dict[str, Any]:
            schedule = await limits.session_schedule(tx_id, duration)
            if schedule is None:
                running = await self._running(session_id)
                return {"result": "REJECTED" if running is not None else "UNKNOWN"}
            profile = active_profile(schedule, self.clock.now())
            if profile is None:
                return {"result": "REJECTED"}
            return {"result": "ACCEPTED", "profile": profile}

        return await self._accept("get", peer, party, session_id, url, work, duration=duration)

    async def clear(
        self, peer: Peer, party: tuple[str, str], session_id: str, query: Mapping[str, str]
    ) -> dict[str, Any]:
        """DELETE: clear the party's limit of the session; answers at once."""
        check_session_id(session_id)
        url = response_url_of(query)
        self._check_target(url)
        origin = f"ocpi:{party[0]}/{party[1]}"

        async def work(limits: ChargingLimits, tx_id: int) -> dict[str, Any]:
            return {"result": result_word(await limits.clear_session_limit(tx_id, origin))}

        return await self._accept("clear", peer, party, session_id, url, work)

    def _check_target(self, url: str) -> None:
        """A response_url must pass the checks of every URL a peer makes us call."""
        try:
            self.bridge.client.check_target(url)
        except OcpiCallFailed as e:
            raise OcpiError(INVALID_PARAMETERS, f"response_url: {e}") from None

    def _response(self, result: str) -> dict[str, Any]:
        return {"result": result, "timeout": self.timeout}

    async def _running(self, session_id: str) -> TransactionView | None:
        """The running transaction of one of our session ids, at a defined station."""
        tx_id = transaction_id_of(session_id)
        if tx_id is None:
            return None
        tx = await self.bridge.csms.transaction(tx_id)
        if tx is None or not tx.active:
            return None
        station = await self.bridge.csms.station(tx.station_id)
        if station is None or not station.defined:
            return None
        return tx

    async def _accept(
        self,
        kind: Kind,
        peer: Peer,
        party: tuple[str, str],
        session_id: str,
        response_url: str,
        work: Callable[[ChargingLimits, int], Awaitable[dict[str, Any]]],
        **details: Any,
    ) -> dict[str, Any]:
        """Decide the ChargingProfileResponse; when ACCEPTED, carry the request out in the
        background and deliver its result."""
        bound = log.bind(
            kind=kind, peer_id=peer.id, party=f"{party[0]}/{party[1]}", session_id=session_id
        )
        limits = self.limits
        tx = None
        if limits is None:
            result = "NOT_SUPPORTED"
        elif (tx := await self._running(session_id)) is None:
            result = "UNKNOWN_SESSION"
        elif len(self._tasks) >= MAX_IN_FLIGHT:
            result = "REJECTED"
        elif not self.pacer.allow((peer.id, session_id, kind), self.clock.now()):
            result = "TOO_OFTEN"
        else:
            result = "ACCEPTED"
        bound.info("charging profile request", result=result, **details)
        if result == "ACCEPTED":
            assert limits is not None and tx is not None
            request = Request(kind, peer.id, party, session_id, tx.id, response_url)
            task = asyncio.create_task(
                self._carry_out(request, limits, work), name=f"chargingprofile-{kind}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return self._response(result)

    # ------------------------------------------------------------------ carrying out

    async def _carry_out(
        self,
        request: Request,
        limits: ChargingLimits,
        work: Callable[[ChargingLimits, int], Awaitable[dict[str, Any]]],
    ) -> None:
        bound = log.bind(kind=request.kind, peer_id=request.peer_id, session_id=request.session_id)
        try:
            # (the peer waits for the result this long: past it, the result says so)
            body = await asyncio.wait_for(work(limits, request.transaction_id), self.timeout)
        except TimeoutError:
            bound.warning("charging profile request timed out", timeout=self.timeout)
            body = {"result": "REJECTED"}
        except Exception:
            bound.exception("charging profile request failed")
            body = {"result": "REJECTED"}
        bound.info("charging profile result", result=body["result"])
        await self._deliver(request, body)

    async def _deliver(self, request: Request, body: dict[str, Any]) -> None:
        """POST the result to the response_url, retried a bounded number of times."""
        bound = log.bind(kind=request.kind, peer_id=request.peer_id, session_id=request.session_id)
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            # (the peer as it is now: it may have renewed its token meanwhile)
            peer = next(
                (p for p in self.bridge.registered_peers() if p.id == request.peer_id), None
            )
            if peer is None:
                bound.warning("charging profile result not delivered: the peer left")
                return
            try:
                reply = await self.bridge.client.request(
                    "POST",
                    request.response_url,
                    peer.token_out,
                    base64_token=peer.token_out_base64,
                    body=body,
                    module="chargingprofiles",
                    to_party=request.party,
                    timeout=self.bridge.settings.push_timeout,
                )
                if reply.ok:
                    bound.info("charging profile result delivered", attempts=attempt)
                    return
                error = reply.describe()
            except OcpiCallFailed as e:
                error = str(e)
            if attempt == DELIVERY_ATTEMPTS:
                bound.error(
                    "charging profile result undeliverable: giving up",
                    attempts=attempt,
                    error=error,
                )
                return
            delay = min(RETRY_MAX_SECONDS, 2.0 ** (attempt - 1)) * (0.5 + random.random())
            bound.warning(
                "charging profile result not delivered, will retry",
                attempts=attempt,
                error=error,
            )
            await self.clock.sleep_until(self.clock.now() + timedelta(seconds=delay))

    async def stop(self) -> None:
        """Cancel what is being carried out (results not delivered are lost)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
