"""Display formats: local times with their zone named, durations, energy, numbers.

Stored times are UTC; a time is shown in the time zone of the station's Location
(Europe/Lisbon, Atlantic/Madeira, Atlantic/Azores...) as ``2026-06-01 14:03:05`` followed
by the zone's name and its offset at that moment, e.g. ``Lisboa UTC+1``, ``Açores UTC+0``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from markupsafe import Markup, escape

from ..timeparse import from_db

ZONE_NAMES = {
    "Europe/Lisbon": {"pt": "Lisboa", "en": "Lisbon"},
    "Atlantic/Madeira": {"pt": "Madeira", "en": "Madeira"},
    "Atlantic/Azores": {"pt": "Açores", "en": "Azores"},
    "UTC": {"pt": "UTC", "en": "UTC"},
}


@lru_cache(maxsize=64)
def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def as_datetime(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return from_db(value)
    except ValueError:
        return None


def offset_text(offset: timedelta | None) -> str:
    minutes = int((offset or timedelta()).total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    h, m = divmod(abs(minutes), 60)
    return f"UTC{sign}{h}" + (f":{m:02d}" if m else "")


def zone_label(tz_name: str | None, lang: str, at: datetime | None = None) -> str:
    name = tz_name or "UTC"
    label = ZONE_NAMES.get(name, {}).get(lang, name)
    local = (at or datetime.now(UTC)).astimezone(zone(name))
    return f"{label} {offset_text(local.utcoffset())}"


def when(
    value: datetime | str | None, tz_name: str | None, lang: str, seconds: bool = True
) -> Markup:
    """A UTC time as local time of ``tz_name`` with the zone named, as HTML."""
    dt = as_datetime(value)
    if dt is None:
        return Markup("—")
    local = dt.astimezone(zone(tz_name))
    text = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    utc = dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Markup(
        '<time datetime="{utc}" title="{full} · {utc}">{text} '
        '<span class="tz">{label}</span></time>'
    ).format(utc=utc, full=tz_name or "UTC", text=text, label=zone_label(tz_name, lang, dt))


def number(value: float | int | None, lang: str, decimals: int = 0) -> str:
    if value is None:
        return "—"
    text = f"{value:,.{decimals}f}"
    if lang == "pt":  # 1 234,56
        text = text.replace(",", "\u202f").replace(".", ",")
    return text


def kwh(wh: float | int | None, lang: str) -> str:
    if wh is None:
        return "—"
    return f"{number(wh / 1000, lang, 2)} kWh"


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "—"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d} d {h} h {m:02d} min"
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {s:02d} s"
    return f"{s} s"


def interval(seconds: float | None, lang: str) -> str:
    if seconds is None:
        return "—"
    return f"{number(seconds, lang, 1 if seconds < 10 else 0)} s"


def local_day_start(now: datetime, tz_name: str) -> datetime:
    """Midnight of ``now``'s day in ``tz_name``, in UTC."""
    tz = zone(tz_name)
    today = now.astimezone(tz).date()
    return datetime.combine(today, time(0), tzinfo=tz).astimezone(UTC)


def parse_local_date(text: str | None, tz_name: str, end: bool = False) -> datetime | None:
    """``YYYY-MM-DD`` typed in a form, as the UTC start of that local day (or of the next
    day when ``end``, for an inclusive 'to' date). None when empty; ValueError if invalid."""
    if not text:
        return None
    d = date.fromisoformat(text.strip())
    if end:
        d += timedelta(days=1)
    return datetime.combine(d, time(0), tzinfo=zone(tz_name)).astimezone(UTC)


def parse_local_datetime(text: str | None, tz_name: str) -> datetime | None:
    """``YYYY-MM-DDTHH:MM`` (a datetime-local input) in ``tz_name``, as UTC."""
    if not text:
        return None
    naive = datetime.fromisoformat(text.strip())
    if naive.tzinfo is not None:
        return naive.astimezone(UTC)
    return naive.replace(tzinfo=zone(tz_name)).astimezone(UTC)


def local_input(value: datetime | str | None, tz_name: str) -> str:
    """A UTC time as the value of a datetime-local input in ``tz_name``."""
    dt = as_datetime(value)
    if dt is None:
        return ""
    return dt.astimezone(zone(tz_name)).strftime("%Y-%m-%dT%H:%M")


def esc(value: object) -> Markup:
    return escape(value)
