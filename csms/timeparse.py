"""Lenient parsing of the timestamps that real chargers send.

OCPP 1.6 asks for RFC 3339 date-times, and the `ocpp` library's schemas do not even check
the format. Real chargers send `+00:00`, `+02` (no minutes), no zone at all, any number of
fractional digits, `1970-01-01` before their clock is set, and sometimes year 0001. We store
every time in UTC; when we had to correct or guess, the original text is kept beside the
stored value and the correction is explained.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

# Earliest plausible charger clock: anything older is a clock that was never set.
EARLIEST_PLAUSIBLE = datetime(2010, 1, 1, tzinfo=UTC)
# A station clock ahead of ours by more than this is wrong (local time labelled Z, drift).
MAX_FUTURE_SKEW = timedelta(minutes=15)

_ISO = re.compile(
    r"""^\s*
    (?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})
    [Tt ]
    (?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<frac>\d+))?)?
    \s*(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?
    \s*$""",
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class ParsedTime:
    """A timestamp as stored: UTC, and the original text when it had to be corrected."""

    value: datetime
    original: str | None = None  # set only when ``value`` is not exactly what was sent
    correction: str | None = None  # why, for the log

    @property
    def corrected(self) -> bool:
        return self.original is not None


def parse_charger_time(text: object, received_at: datetime) -> ParsedTime:
    """Parse a charger's timestamp leniently; never raises.

    - missing (None): the arrival time, not counted as a correction;
    - RFC 3339 with `Z` or `+00:00`: taken as is;
    - another offset (`+02`, `+0200`, `+02:00`): converted to UTC, original kept;
    - no zone: taken as UTC (OCPI's rule for a missing designator), original kept;
    - unparseable, before 2010 (clock not set) or more than 15 minutes in the future
      (clock wrong): replaced by the arrival time, original kept.
    """
    if text is None:
        return ParsedTime(received_at)
    raw = str(text)
    m = _ISO.match(raw)
    if m is None:
        return ParsedTime(received_at, raw, "unparseable timestamp, arrival time used")
    try:
        frac = (m["frac"] or "0")[:6].ljust(6, "0")
        naive = datetime(
            int(m["y"]),
            int(m["mo"]),
            int(m["d"]),
            int(m["h"]),
            int(m["mi"]),
            int(m["s"] or 0),
            int(frac),
        )
    except ValueError:
        return ParsedTime(received_at, raw, "impossible date, arrival time used")

    tz = m["tz"]
    correction: str | None = None
    if tz is None:
        offset = timedelta(0)
        correction = "no time zone, taken as UTC"
    elif tz in ("Z", "z"):
        offset = timedelta(0)
    else:
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        if hours > 23 or minutes > 59:
            return ParsedTime(received_at, raw, "impossible offset, arrival time used")
        offset = sign * timedelta(hours=hours, minutes=minutes)
        if offset or not re.fullmatch(r"[+-]\d{2}:\d{2}", tz):
            correction = f"offset {tz} converted to UTC"

    try:
        value = naive.replace(tzinfo=timezone(offset)).astimezone(UTC)
    except (OverflowError, ValueError):
        return ParsedTime(received_at, raw, "out-of-range date, arrival time used")
    if value < EARLIEST_PLAUSIBLE:
        return ParsedTime(received_at, raw, "station clock not set, arrival time used")
    if value > received_at + MAX_FUTURE_SKEW:
        return ParsedTime(received_at, raw, "timestamp in the future, arrival time used")
    if correction is None:
        return ParsedTime(value)
    return ParsedTime(value, raw, correction)


def to_db(value: datetime) -> str:
    """Fixed-width, sortable UTC text used in the database."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_db(text: str | None) -> datetime | None:
    if text is None:
        return None
    # what to_db wrote; fromisoformat (C) is some 40 times faster than strptime, and read
    # paths (every Location built for a push) parse several of these
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"not a database time: {text!r}")
    return value


def to_iso(value: datetime | None) -> str | None:
    """UTC with a `Z`, seconds precision: the shape OCPI and our API emit."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_ocpp(value: datetime) -> str:
    """UTC with milliseconds and a `Z`, for OCPP frames we send."""
    v = value.astimezone(UTC)
    return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z"


def parse_api_time(text: str) -> datetime:
    """Strict parse for times given to our own API (query filters): ISO 8601 with a zone,
    or no zone meaning UTC. Raises ValueError with a readable message."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 date-time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
