"""CSV exports for accounting: the filters, the CSV dialect and the streamed response.

An export is a time range ``[from, to)`` in the operator's time zone (``web.time_zone``),
optionally one station and one token, written as CSV while it is read: pages of
:data:`PAGE_ROWS` rows are read from the database by key (never OFFSET, never the whole
range at once) and each page is written to the response before the next is read.

The CSV is RFC 4180 (comma, dot as decimal separator, CRLF, no BOM) unless asked
otherwise: ``format=excel-pt`` is what Excel in Portugal opens with a double click
(``;``, decimal comma, UTF-8 with a BOM, without which Excel reads UTF-8 as Windows-1252
and mangles "São João"); ``sep=;`` / ``decimal=comma`` / ``bom=1`` set each on its own.
The default has no BOM because the files also go to scripts and accounting imports, many
of which take a BOM for part of the first column's name.

Times are written in the operator's time zone with their offset (ISO 8601, e.g.
``2026-10-25T01:30:00+01:00``); the zone is named in the file name. A text cell from a
station or a peer that a spreadsheet would read as a formula (starting with ``=``, ``+``,
``-``, ``@``, a tab or a CR) is written with a leading ``'``.

csms exports its transactions (``sessions.csv``); an extension uses the same pieces
(re-exported by :mod:`csms.ports`) for its own exports (the OCPI bridge's CDRs).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web

from .timeparse import from_db

log = structlog.get_logger("csms.exports")

PAGE_ROWS = 500  # rows read from the database, and written, at a time
MAX_DAYS = 366  # the longest range one export may cover
MAX_TOKEN = 64  # an OCPP id tag is at most 20 characters, an OCPI token uid 36
MAX_STATION = 255
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
FORMATS = ("csv", "excel-pt")

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")


class ExportError(Exception):
    """A request for an export that cannot be answered: its status, code and message."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class ExportFilter:
    start: datetime  # UTC, included
    end: datetime  # UTC, excluded
    station: str | None
    token: str | None
    tz_name: str
    sep: str = ","
    decimal_comma: bool = False
    bom: bool = False

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz_name)

    def local(self, value: datetime | None) -> str:
        """A time in the operator's zone, ISO 8601 with its offset (empty when None)."""
        if value is None:
            return ""
        return value.astimezone(self.zone).isoformat(timespec="seconds")

    def filename(self, kind: str) -> str:
        """``sessions_2026-10-01_2026-11-01_Europe-Lisbon.csv``: what, when, in which zone."""
        zone = self.zone

        def day(value: datetime) -> str:
            local = value.astimezone(zone)
            text = local.strftime("%Y-%m-%d")
            return text if local.time() == time(0) else local.strftime("%Y-%m-%dT%H%M")

        parts = [kind, day(self.start), day(self.end)]
        if self.station:
            parts.append(self.station)
        name = "_".join([*parts, self.tz_name.replace("/", "-")])
        return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:200] + ".csv"


def _local_time(text: str, tz_name: str, field: str) -> datetime:
    """A date (local midnight) or a date-time (local unless it has an offset), as UTC."""
    text = text.strip()
    try:
        if len(text) > 40 or not text[:4].isdigit() or not 1970 <= int(text[:4]) <= 9998:
            raise ValueError(text)  # (years far out would overflow on conversion to UTC)
        if _DATE.fullmatch(text):
            d = date.fromisoformat(text)
            return datetime.combine(d, time(0), tzinfo=ZoneInfo(tz_name)).astimezone(UTC)
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except (ValueError, OverflowError):
        raise ExportError(
            422,
            "invalid_query",
            f"{field}: a date (YYYY-MM-DD) or a date-time (YYYY-MM-DDTHH:MM[:SS][+HH:MM]),"
            f" in {tz_name} unless an offset is given, of a year from 1970 to 9998",
            field,
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(tz_name))
    try:
        return value.astimezone(UTC)
    except OverflowError:  # (an offset past the end of the year 9998 cannot do it; safe)
        raise ExportError(422, "invalid_query", f"{field}: out of range", field) from None


def _flag(query: Mapping[str, str], name: str) -> bool | None:
    if name not in query:
        return None
    text = query[name].strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise ExportError(422, "invalid_query", f"{name}: 1 or 0", name)


def _text(query: Mapping[str, str], name: str, longest: int) -> str | None:
    text = query.get(name, "").strip()
    if not text:
        return None
    if len(text) > longest or not _PRINTABLE.fullmatch(text):
        raise ExportError(
            422, "invalid_query", f"{name}: at most {longest} printable characters", name
        )
    return text


def parse_filter(query: Mapping[str, str], tz_name: str, max_days: int = MAX_DAYS) -> ExportFilter:
    """The filter of an export from a request's query; :class:`ExportError` (422) when a
    value is malformed, missing, or the range is empty or longer than ``max_days``."""
    for name in ("from", "to"):
        if not query.get(name, "").strip():
            raise ExportError(
                422, "invalid_query", f"{name} is required (a date or a date-time)", name
            )
    start = _local_time(query["from"], tz_name, "from")
    end = _local_time(query["to"], tz_name, "to")
    if end <= start:
        raise ExportError(422, "invalid_range", "to must be after from (to is excluded)", "to")
    if end - start > timedelta(days=max_days):
        raise ExportError(
            422, "range_too_long", f"an export covers at most {max_days} days; split it", "to"
        )
    fmt = query.get("format", "csv").strip().lower() or "csv"
    if fmt not in FORMATS:
        raise ExportError(422, "invalid_query", f"format: one of {', '.join(FORMATS)}", "format")
    excel = fmt == "excel-pt"
    sep = query.get("sep", ";" if excel else ",")
    if sep not in (",", ";"):
        raise ExportError(422, "invalid_query", "sep: , or ;", "sep")
    decimal = query.get("decimal", "comma" if excel else "dot").strip().lower()
    if decimal not in ("dot", "comma"):
        raise ExportError(422, "invalid_query", "decimal: dot or comma", "decimal")
    if decimal == "comma" and sep == ",":
        raise ExportError(
            422, "invalid_query", "decimal=comma needs sep=; (a comma separates cells)", "sep"
        )
    bom = _flag(query, "bom")
    return ExportFilter(
        start=start,
        end=end,
        station=_text(query, "station", MAX_STATION),
        token=_text(query, "token", MAX_TOKEN),
        tz_name=tz_name,
        sep=sep,
        decimal_comma=decimal == "comma",
        bom=excel if bom is None else bom,
    )


def neutralised(text: str) -> str:
    """Text a spreadsheet would run as a formula, made inert with a leading ``'``."""
    return "'" + text if text.startswith(FORMULA_START) else text


def cell(value: Any, f: ExportFilter) -> str:
    """One value as CSV text: times in the operator's zone, numbers never in scientific
    notation (with the chosen decimal separator), text neutralised, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return f.local(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (float, Decimal)):
        number = Decimal(str(value)) if isinstance(value, float) else value
        if not number.is_finite():
            return ""
        text = format(number, "f")
        return text.replace(".", ",") if f.decimal_comma else text
    if isinstance(value, (list, tuple)):
        return neutralised("|".join(str(v) for v in value))
    return neutralised(str(value))


def kwh(wh: int | float | None) -> Decimal | None:
    """Wh as kWh with three decimals (exact, for a CSV cell)."""
    if wh is None:
        return None
    return (Decimal(str(wh)) / 1000).quantize(Decimal("0.001"))


@dataclass
class ExportCounters:
    """What exports read and wrote since start (the proof that they go by pages)."""

    exports: int = 0
    pages: int = 0
    rows: int = 0


COUNTERS = ExportCounters()


async def stream_csv(
    request: web.Request,
    f: ExportFilter,
    kind: str,
    header: Sequence[str],
    pages: AsyncIterator[Iterable[Sequence[Any]]],
    extra_headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Write ``header`` then each page of rows from ``pages`` as it comes. Once the headers
    are sent a failure cannot become an error status: it is logged and the connection
    dropped, so the client sees a transfer cut short rather than a complete-looking file."""
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/csv; charset=utf-8; header=present",
            "Content-Disposition": f'attachment; filename="{f.filename(kind)}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Export-Time-Zone": f.tz_name,
            **(extra_headers or {}),
        },
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=f.sep, lineterminator="\r\n")
    writer.writerow(header)
    first = ("\ufeff" if f.bom else "") + buffer.getvalue()
    await response.write(first.encode("utf-8"))
    COUNTERS.exports += 1
    written = 0
    try:
        async for page in pages:
            buffer.seek(0)
            buffer.truncate()
            n = 0
            for row in page:
                writer.writerow([cell(v, f) for v in row])
                n += 1
            COUNTERS.pages += 1
            COUNTERS.rows += n
            written += n
            if n:
                await response.write(buffer.getvalue().encode("utf-8"))
    except (ConnectionResetError, OSError):
        log.info("export abandoned by the client", kind=kind, rows=written)
        raise
    except Exception:
        log.exception("export failed while streaming", kind=kind, rows=written)
        if request.transport is not None:
            request.transport.close()
        raise
    await response.write_eof()
    log.info("export written", kind=kind, rows=written, station=f.station is not None)
    return response


async def keyset_pages(
    read: Callable[[tuple[Any, ...] | None, int], Any],
    key: Callable[[Any], tuple[Any, ...]],
    convert: Callable[[Any], Sequence[Any]],
    page_rows: int = PAGE_ROWS,
) -> AsyncIterator[list[Sequence[Any]]]:
    """Pages from ``read(after_key, limit)`` (an awaitable of rows in key order), each page
    starting after the previous one's last key, until a page comes back short."""
    after: tuple[Any, ...] | None = None
    while True:
        rows = await read(after, page_rows)
        yield [convert(r) for r in rows]
        if len(rows) < page_rows:
            return
        after = key(rows[-1])


# ------------------------------------------------------------------ csms's sessions

SESSION_COLUMNS = (
    "transaction_id",
    "station_id",
    "connector_id",
    "id_tag",
    "id_tag_status",
    "token_owner",
    "start_time",
    "stop_time",
    "duration_s",
    "meter_start_wh",
    "meter_stop_wh",
    "energy_kwh",
    "stop_reason",
    "stop_id_tag",
    "state",
    "reservation_id",
    "flags",
)


def session_row(r: Mapping[str, Any]) -> list[Any]:
    """A transaction row (as the repository reads it) in the order of SESSION_COLUMNS."""
    start = from_db(r["start_time"])
    stop = from_db(r["stop_time"]) if r["stop_time"] else None
    active = r["stop_received_at"] is None
    energy = r["meter_stop"] - r["meter_start"] if r["meter_stop"] is not None else None
    duration = int((stop - start).total_seconds()) if stop and start else None
    return [
        r["id"],
        r["station_id"],
        r["connector_id"],
        r["id_tag"],
        r["id_tag_status"],
        r["tag_owner"],
        start,
        stop,
        duration,
        r["meter_start"],
        r["meter_stop"],
        kwh(energy),
        r["stop_reason"],
        r["stop_id_tag"],
        "active" if active else "stopped",
        r["reservation_id"],
        list(r["flags"] or []),
    ]


async def sessions_response(
    request: web.Request, store: Any, f: ExportFilter
) -> web.StreamResponse:
    """csms's transactions started in the filter's range as a streamed CSV; ExportError 404
    when the station is not one csms knows (checked before anything is sent)."""
    if f.station is not None and await store.stations.get(f.station) is None:
        raise ExportError(404, "not_found", f"no station {f.station!r}", "station")
    transactions = store.transactions

    async def read(after: tuple[Any, ...] | None, limit: int) -> list[dict[str, Any]]:
        key = (str(after[0]), int(after[1])) if after is not None else None
        return await transactions.export_page(f.start, f.end, f.station, f.token, key, limit)

    pages = keyset_pages(read, lambda r: (r["start_time"], r["id"]), session_row)
    return await stream_csv(request, f, "sessions", SESSION_COLUMNS, pages)
