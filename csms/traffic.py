"""What each station's traffic shows: measured intervals (rules R3 and R4) and its last frames.

A :class:`TrafficMonitor` is fed by every station connection (each frame received and each
frame sent) and keeps, per station, in memory and bounded:

- the intervals between consecutive Heartbeat requests (R4) and between consecutive periodic
  MeterValues of the same connector and transaction (R3), the last ``intervals_kept`` of
  each; an interval never spans a reconnection;
- a ring buffer of the last ``frames_per_station`` frames, both directions, each truncated
  to ``frame_max_chars`` characters, and at most ``station_max_chars`` characters of frame
  text in all (older frames leave first). With the defaults a station holds at most about
  8 KiB, so 10,000 stations stay well under 100 MB even when every frame is large, and
  around 20 MB with ordinary traffic.

:func:`judge` compares a station's configured intervals (its GetConfiguration snapshot)
and measured ones with MOBI.E's rules. Nothing here is persisted: a restart starts afresh.
"""

from __future__ import annotations

import statistics
import sys
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import ocppj, redact
from .config import MOBIE_HEARTBEAT_INTERVAL, MOBIE_MAX_METER_VALUE_SAMPLE_INTERVAL

IN, OUT = "in", "out"


def tolerance(limit: float) -> float:
    """Slack allowed over a rule's interval before a measurement counts as too slow: timer
    jitter, a busy network, a station that sends just after its interval."""
    return max(10.0, 0.1 * limit)


@dataclass(frozen=True, slots=True)
class FrameRecord:
    at: datetime
    direction: str  # "in" (from the station) or "out" (sent by us)
    kind: str  # CALL, CALLRESULT, CALLERROR or "invalid"
    action: str | None  # for answers: the action of the request they answer, when known
    unique_id: str | None
    text: str  # the raw frame, truncated
    size: int  # the raw frame's length in characters

    @property
    def truncated(self) -> bool:
        return len(self.text) < self.size


@dataclass(frozen=True, slots=True)
class Measured:
    """Measured intervals, in seconds (None: fewer than two consecutive frames yet)."""

    heartbeat_median: float | None
    heartbeat_max: float | None
    heartbeat_samples: int
    last_heartbeat_at: datetime | None
    meter_median: float | None
    meter_max: float | None
    meter_samples: int
    last_meter_values_at: datetime | None


NOTHING_MEASURED = Measured(None, None, 0, None, None, None, 0, None)


class _Station:
    __slots__ = (
        "frames",
        "heartbeat_intervals",
        "last_heartbeat",
        "last_meter",
        "last_meter_values",
        "meter_intervals",
        "open_calls",
        "text_chars",
    )

    def __init__(self, frames: int, kept: int) -> None:
        self.frames: deque[FrameRecord] = deque(maxlen=frames)
        self.text_chars = 0
        self.last_heartbeat: datetime | None = None
        self.heartbeat_intervals: deque[float] = deque(maxlen=kept)
        self.last_meter: dict[tuple[int, int], datetime] = {}
        self.last_meter_values: datetime | None = None
        self.meter_intervals: deque[float] = deque(maxlen=kept)
        # unique id -> action of requests not answered yet (both directions), to name answers
        self.open_calls: dict[str, str] = {}


class TrafficMonitor:
    """Per-station traffic measurements and recent frames (see the module docstring)."""

    def __init__(
        self,
        frames_per_station: int = 20,
        frame_max_chars: int = 2048,
        station_max_chars: int = 6144,
        intervals_kept: int = 10,
        max_stations: int = 50_000,
    ) -> None:
        self.frames_per_station = frames_per_station
        self.frame_max_chars = frame_max_chars
        self.station_max_chars = station_max_chars
        self.intervals_kept = intervals_kept
        self.max_stations = max_stations
        self._stations: dict[str, _Station] = {}

    def _get(self, station_id: str) -> _Station:
        st = self._stations.get(station_id)
        if st is None:
            if len(self._stations) >= self.max_stations:
                # forget the station we heard of first (dicts keep insertion order)
                del self._stations[next(iter(self._stations))]
            st = self._stations[station_id] = _Station(self.frames_per_station, self.intervals_kept)
        return st

    # ------------------------------------------------------------------ feeding

    def connected(self, station_id: str) -> None:
        """A new connection: intervals restart (a silence while offline is not one)."""
        st = self._get(station_id)
        st.last_heartbeat = None
        st.last_meter.clear()
        st.open_calls.clear()

    def received(
        self,
        station_id: str,
        at: datetime,
        message: str | bytes,
        frame: ocppj.Frame | None,
    ) -> None:
        """A frame from the station; ``frame`` is None when it could not be parsed."""
        st = self._get(station_id)
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        if isinstance(frame, ocppj.Call):
            action = sys.intern(frame.action)
            uid = _safe(frame.unique_id)
            self._add(st, FrameRecord(at, IN, "CALL", action, uid, *self._cut(text)))
            if action == "Heartbeat":
                if st.last_heartbeat is not None:
                    st.heartbeat_intervals.append((at - st.last_heartbeat).total_seconds())
                st.last_heartbeat = at
            elif action == "MeterValues":
                self._meter_values(st, at, frame.payload)
            elif action == "StopTransaction":
                tx = frame.payload.get("transactionId")
                for key in [k for k in st.last_meter if k[1] == tx]:
                    del st.last_meter[key]
        elif isinstance(frame, ocppj.CallResult | ocppj.CallError):
            kind = "CALLRESULT" if isinstance(frame, ocppj.CallResult) else "CALLERROR"
            action = st.open_calls.pop(frame.unique_id, None)
            if redact.has_secrets(action):  # e.g. a GetConfiguration answer's AuthorizationKey
                text = redact.redact_frame(text, action)
            uid = _safe(frame.unique_id)
            self._add(st, FrameRecord(at, IN, kind, action, uid, *self._cut(text)))
        else:
            self._add(st, FrameRecord(at, IN, "invalid", None, None, *self._cut(text)))

    def sent(
        self,
        station_id: str,
        at: datetime,
        text: str,
        kind: str,
        unique_id: str,
        action: str | None,
    ) -> None:
        """A frame we sent to the station: our request (``kind`` CALL), or our answer
        (CALLRESULT, CALLERROR) to its request ``action``. The sender knows all of it; the
        frame is not parsed again, unless it may carry a secret (ChangeConfiguration of an
        ``AuthorizationKey``...), whose value is then masked (:mod:`csms.redact`)."""
        st = self._get(station_id)
        if action is not None:
            action = sys.intern(action)
        if kind == "CALL" and action is not None:
            self._remember_call(st, unique_id, action)  # to name the station's answer
            if redact.has_secrets(action):
                text = redact.redact_frame(text, action)
        uid = _safe(unique_id)
        self._add(st, FrameRecord(at, OUT, kind, action, uid, *self._cut(text)))

    def forget(self, station_id: str) -> None:
        self._stations.pop(station_id, None)

    # ------------------------------------------------------------------ reading

    def frames(self, station_id: str) -> list[FrameRecord]:
        """The station's recent frames, newest first."""
        st = self._stations.get(station_id)
        return list(reversed(st.frames)) if st is not None else []

    def measured(self, station_id: str) -> Measured:
        st = self._stations.get(station_id)
        if st is None:
            return NOTHING_MEASURED
        hb, mv = list(st.heartbeat_intervals), list(st.meter_intervals)
        return Measured(
            statistics.median(hb) if hb else None,
            max(hb) if hb else None,
            len(hb),
            st.last_heartbeat,
            statistics.median(mv) if mv else None,
            max(mv) if mv else None,
            len(mv),
            st.last_meter_values,
        )

    def __len__(self) -> int:
        return len(self._stations)

    # ------------------------------------------------------------------ internals

    def _cut(self, text: str) -> tuple[str, int]:
        return text[: self.frame_max_chars], len(text)

    def _add(self, st: _Station, record: FrameRecord) -> None:
        if len(st.frames) == st.frames.maxlen:
            st.text_chars -= len(st.frames[0].text)
        st.frames.append(record)
        st.text_chars += len(record.text)
        while st.text_chars > self.station_max_chars and len(st.frames) > 1:
            st.text_chars -= len(st.frames.popleft().text)

    @staticmethod
    def _remember_call(st: _Station, unique_id: str, action: str) -> None:
        st.open_calls[unique_id] = action
        while len(st.open_calls) > 8:  # answers that never came
            del st.open_calls[next(iter(st.open_calls))]

    @staticmethod
    def _meter_values(st: _Station, at: datetime, payload: dict[str, Any]) -> None:
        """Called before the payload is validated: any shape may come here."""
        st.last_meter_values = at
        tx, connector = payload.get("transactionId"), payload.get("connectorId")
        if not isinstance(tx, int) or not isinstance(connector, int):
            return  # outside a transaction: not what R3 measures
        meter_values = payload.get("meterValue")
        periodic = isinstance(meter_values, list) and any(
            sv.get("context", "Sample.Periodic") == "Sample.Periodic"
            for mv in meter_values
            if isinstance(mv, dict) and isinstance(mv.get("sampledValue"), list)
            for sv in mv["sampledValue"]
            if isinstance(sv, dict)
        )
        if not periodic:  # clock-aligned or transaction begin/end values have their own timing
            return
        key = (connector, tx)
        last = st.last_meter.get(key)
        if last is not None:
            st.meter_intervals.append((at - last).total_seconds())
        st.last_meter[key] = at
        while len(st.last_meter) > 16:
            del st.last_meter[next(iter(st.last_meter))]


def _safe(unique_id: str) -> str:
    """A station's unique id as shown: a lone surrogate (which has no UTF-8 form and would
    break the page) replaced."""
    return unique_id if unique_id.isascii() else ocppj.repair_text(unique_id)


# ---------------------------------------------------------------------- R3 / R4 verdicts

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    rule: str  # "R3" or "R4"
    key: str  # the OCPP configuration key
    limit: int  # seconds the rule allows
    status: str  # ok | fail | unknown
    configured: int | None
    measured_median: float | None
    measured_max: float | None
    samples: int
    # why, as codes with their values: (code, value); the web interface translates them
    reasons: tuple[tuple[str, Any], ...] = field(default=())


def configured_interval(snapshot: list[dict[str, Any]] | None, key: str) -> int | None:
    """The integer value of ``key`` in a GetConfiguration snapshot, if it has one."""
    for entry in snapshot or []:
        if isinstance(entry, dict) and entry.get("key") == key:
            try:
                return int(float(str(entry.get("value")).strip()))
            except ValueError:
                return None
    return None


def _verdict(
    rule: str,
    key: str,
    limit: int,
    configured: int | None,
    median: float | None,
    maximum: float | None,
    samples: int,
) -> RuleVerdict:
    reasons: list[tuple[str, Any]] = []
    failed = unknown = False
    if configured is None:
        unknown = True
        reasons.append(("not_configured", None))
    elif configured <= 0 or configured > limit:
        failed = True
        reasons.append(("configured_over_limit", configured))
    if median is None:
        unknown = True
        reasons.append(("not_measured", None))
    elif median > limit + tolerance(limit):
        failed = True
        reasons.append(("measured_over_limit", round(median, 1)))
    status = FAIL if failed else UNKNOWN if unknown else OK
    return RuleVerdict(
        rule, key, limit, status, configured, median, maximum, samples, tuple(reasons)
    )


def judge(snapshot: list[dict[str, Any]] | None, measured: Measured) -> dict[str, RuleVerdict]:
    """R3 and R4 for one station: configured (its snapshot) and measured (its traffic).

    R4: HeartbeatInterval at most 120 s (MOBI.E asks for 120; the central system may set a
    lower one, which is stricter) and the measured interval (median of the recent ones) not
    slower than 120 s plus :func:`tolerance`. R3: MeterValueSampleInterval between 1 and
    300 s and the measured interval during transactions not slower than 300 s plus the
    tolerance. Without a snapshot or a measurement the verdict is ``unknown``, never ``ok``.
    """
    return {
        "R3": _verdict(
            "R3",
            "MeterValueSampleInterval",
            MOBIE_MAX_METER_VALUE_SAMPLE_INTERVAL,
            configured_interval(snapshot, "MeterValueSampleInterval"),
            measured.meter_median,
            measured.meter_max,
            measured.meter_samples,
        ),
        "R4": _verdict(
            "R4",
            "HeartbeatInterval",
            MOBIE_HEARTBEAT_INTERVAL,
            configured_interval(snapshot, "HeartbeatInterval"),
            measured.heartbeat_median,
            measured.heartbeat_max,
            measured.heartbeat_samples,
        ),
    }
