"""Charts as inline SVG, drawn by Python: a session's power and energy, a station's status
timeline, the fleet's availability. Pure: data and labels in, markup out.

No script and no style attribute (the pages' Content-Security-Policy allows neither):
colours are SVG presentation attributes. Every chart has a ``<title>`` and a ``<desc>``
(``role="img"``, ``aria-labelledby``), labelled axes, and its figures are also given as a
table by the templates. Every list drawn is bounded: series are downsampled to at most
``MAX_POINTS`` points, a timeline band to one rectangle per half unit of its width.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta

from markupsafe import Markup, escape

from ..availability import Segment
from .fmt import number, zone

MAX_POINTS = 500
SVG_NS = "http://www.w3.org/2000/svg"

# state -> fill colour (contrast with white text is not needed: text is never on a band)
STATE_COLOURS = {
    "available": "#2e7d32",
    "occupied": "#1565c0",
    "faulted": "#c62828",
    "unavailable": "#ef6c00",
    "offline": "#424242",
    "unknown": "#d0d5dd",
}
LINE_COLOUR = "#1849a9"
GRID_COLOUR = "#e4e7ec"
AXIS_COLOUR = "#667085"
TEXT_COLOUR = "#344054"

Series = Sequence[tuple[datetime, float]]


# ---------------------------------------------------------------------------- data


def downsample(
    points: Series, limit: int = MAX_POINTS, how: str = "mean"
) -> list[tuple[datetime, float]]:
    """At most ``limit`` points of a time-ordered series: consecutive points are grouped in
    equal-count buckets, each drawn at its last time with its mean (``"mean"``: power),
    last (``"last"``: an energy register) or largest (``"max"``) value. The first and the
    last point of the series are kept as they are."""
    limit = max(2, limit)
    n = len(points)
    if n <= limit:
        return [(t, float(v)) for t, v in points]
    inner = points[1:-1]
    slots = limit - 2
    step = math.ceil(len(inner) / slots)
    out = [(points[0][0], float(points[0][1]))]
    for i in range(0, len(inner), step):
        chunk = inner[i : i + step]
        values = [float(v) for _, v in chunk]
        if how == "last":
            value = values[-1]
        elif how == "max":
            value = max(values)
        else:
            value = sum(values) / len(values)
        out.append((chunk[-1][0], value))
    out.append((points[-1][0], float(points[-1][1])))
    return out


def power_from_energy(points: Series) -> list[tuple[datetime, float]]:
    """Average power (kW) between consecutive readings of an energy register (Wh), drawn
    at the later reading; pairs with no time between them or a register that went back
    (a meter reset) give no point."""
    out: list[tuple[datetime, float]] = []
    for (t0, e0), (t1, e1) in itertools.pairwise(points):
        seconds = (t1 - t0).total_seconds()
        if seconds <= 0 or e1 < e0:
            continue
        out.append((t1, (e1 - e0) / 1000.0 / (seconds / 3600.0)))
    return out


def nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at least ``value`` (1 if none)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if m * power >= value * (1 - 1e-9):
            return m * power
    return 10 * power


_STEPS = (
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    2 * 86400,
    5 * 86400,
    7 * 86400,
    14 * 86400,
)


def time_ticks(
    start: datetime, end: datetime, tz_name: str | None, max_ticks: int = 8
) -> list[tuple[datetime, str]]:
    """Round local times between ``start`` and ``end`` for an axis, with their labels
    (``HH:MM``; ``MM-DD`` at local midnights and for steps of days)."""
    span = (end - start).total_seconds()
    if span <= 0:
        return []
    tz = zone(tz_name)
    step = next((s for s in _STEPS if span / s <= max_ticks), _STEPS[-1])
    out: list[tuple[datetime, str]] = []
    local = start.astimezone(tz)
    if step < 86400:
        midnight = datetime.combine(local.date(), time(0), tzinfo=tz)
        offset = (local - midnight).total_seconds()
        first = midnight + timedelta(seconds=math.ceil(offset / step) * step)
        t = first.astimezone(UTC)
        for _ in range(max_ticks * 3):
            if t > end:
                break
            if t >= start:
                lt = t.astimezone(tz)
                at_midnight = lt.hour == 0 and lt.minute == 0
                label = lt.strftime("%m-%d" if at_midnight and span > 86400 else "%H:%M")
                out.append((t, label))
            t += timedelta(seconds=step)
    else:
        days = step // 86400
        day = local.date() + timedelta(days=1)
        if local.time() == time(0):
            day = local.date()
        for _ in range(max_ticks * 3):
            t = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
            if t > end:
                break
            out.append((t, day.strftime("%m-%d")))
            day += timedelta(days=days)
    return out[: max_ticks * 2]


# ---------------------------------------------------------------------------- drawing


def _f(value: float) -> str:
    """A coordinate: one decimal, no trailing zero."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _open(chart_id: str, width: int, height: int, title: str, desc: str) -> list[str]:
    cid = escape(chart_id)
    return [
        f'<svg xmlns="{SVG_NS}" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-labelledby="{cid}-title {cid}-desc" class="chart" id="{cid}" '
        f'font-family="sans-serif" font-size="12">',
        f'<title id="{cid}-title">{escape(title)}</title>',
        f'<desc id="{cid}-desc">{escape(desc)}</desc>',
    ]


def _text(x: float, y: float, content: str, anchor: str = "middle", extra: str = "") -> str:
    return (
        f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}" fill="{TEXT_COLOUR}"{extra}>'
        f"{escape(content)}</text>"
    )


def line_chart(
    points: Series,
    *,
    chart_id: str,
    title: str,
    desc: str,
    y_label: str,
    x_label: str,
    tz_name: str | None,
    lang: str,
    decimals: int = 1,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Markup:
    """A line of values over time (at most ``MAX_POINTS`` of them are drawn)."""
    width, height = 720, 260
    left, right, top, bottom = 64, 16, 16, 48
    pw, ph = width - left - right, height - top - bottom
    pts = downsample(points, MAX_POINTS)
    parts = _open(chart_id, width, height, title, desc)
    t0 = start or (pts[0][0] if pts else datetime.now(UTC))
    t1 = end or (pts[-1][0] if pts else t0)
    if t1 <= t0:
        t1 = t0 + timedelta(minutes=1)
    top_value = nice_max(max((v for _, v in pts), default=0.0))
    span = (t1 - t0).total_seconds()

    def x(t: datetime) -> float:
        return left + pw * min(1.0, max(0.0, (t - t0).total_seconds() / span))

    def y(v: float) -> float:
        return top + ph * (1 - min(1.0, max(0.0, v / top_value)))

    divisions = _divisions(top_value)
    step_value = top_value / divisions
    for i in range(divisions + 1):  # horizontal grid and the value axis
        v = step_value * i
        yy = y(v)
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{_f(yy)}" y2="{_f(yy)}" '
            f'stroke="{GRID_COLOUR}"/>'
        )
        parts.append(_text(left - 6, yy + 4, number(v, lang, _decimals(step_value)), "end"))
    for t, label in time_ticks(t0, t1, tz_name):
        xx = x(t)
        parts.append(
            f'<line x1="{_f(xx)}" x2="{_f(xx)}" y1="{top}" y2="{top + ph}" stroke="{GRID_COLOUR}"/>'
        )
        parts.append(_text(xx, top + ph + 16, label))
    parts.append(
        f'<path d="M{left} {top}V{top + ph}H{left + pw}" fill="none" stroke="{AXIS_COLOUR}"/>'
    )
    parts.append(
        _text(14, top + ph / 2, y_label, extra=f' transform="rotate(-90 14 {_f(top + ph / 2)})"')
    )
    parts.append(_text(left + pw / 2, height - 6, x_label))
    if pts:
        coords = " ".join(f"{_f(x(t))},{_f(y(v))}" for t, v in pts)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{LINE_COLOUR}" '
            f'stroke-width="2" stroke-linejoin="round" class="series" '
            f'data-points="{len(pts)}"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _divisions(top: float) -> int:
    """Grid lines for a ``nice_max`` top: steps of 1, 2 or 5 times a power of ten."""
    mantissa = top / 10 ** math.floor(math.log10(top))
    return 4 if abs(mantissa - 2) < 1e-6 else 5


def _decimals(step: float) -> int:
    """Decimals that write every multiple of ``step`` exactly (at most 3)."""
    for d in range(4):
        if abs(step * 10**d - round(step * 10**d)) < 1e-6:
            return d
    return 3


def timeline_chart(
    rows: Sequence[tuple[str, Sequence[Segment], float | None]],
    start: datetime,
    end: datetime,
    *,
    chart_id: str,
    title: str,
    desc: str,
    x_label: str,
    tz_name: str | None,
    lang: str,
    state_labels: dict[str, str],
) -> Markup:
    """One horizontal band per row (label, segments, availability %), coloured by state,
    over [start, end), with a legend."""
    rows = list(rows)[:64]
    width = 720
    left, right = 110, 64
    band, gap, top = 20, 10, 34
    pw = width - left - right
    height = top + len(rows) * (band + gap) + 44
    parts = _open(chart_id, width, height, title, desc)
    span = max(1.0, (end - start).total_seconds())

    def x(t: datetime) -> float:
        frac = min(1.0, max(0.0, (t - start).total_seconds() / span))
        return round((left + pw * frac) * 2) / 2

    lx = 0.0  # the legend
    for state, colour in STATE_COLOURS.items():
        label = state_labels.get(state, state)
        parts.append(
            f'<rect x="{_f(lx)}" y="6" width="12" height="12" fill="{colour}" '
            f'data-legend="{escape(state)}"/>'
        )
        parts.append(_text(lx + 16, 16, label, "start"))
        lx += 28 + 7 * len(label)
    for i, (label, segments, percent) in enumerate(rows):
        y = top + i * (band + gap)
        parts.append(_text(left - 8, y + band / 2 + 4, label, "end"))
        parts.append(
            f'<rect x="{left}" y="{y}" width="{pw}" height="{band}" '
            f'fill="{STATE_COLOURS["unknown"]}"/>'
        )
        for s in segments:
            x0, x1 = x(s.start), x(s.end)
            if x1 <= x0:
                continue
            parts.append(
                f'<rect x="{_f(x0)}" y="{y}" width="{_f(x1 - x0)}" height="{band}" '
                f'fill="{STATE_COLOURS.get(s.state, STATE_COLOURS["unknown"])}" '
                f'data-state="{escape(s.state)}"/>'
            )
        share = "—" if percent is None else f"{number(percent, lang, 1)} %"
        parts.append(_text(left + pw + 6, y + band / 2 + 4, share, "start"))
    axis_y = top + len(rows) * (band + gap)
    parts.append(
        f'<line x1="{left}" x2="{left + pw}" y1="{axis_y}" y2="{axis_y}" stroke="{AXIS_COLOUR}"/>'
    )
    for t, label in time_ticks(start, end, tz_name):
        xx = x(t)
        parts.append(
            f'<line x1="{_f(xx)}" x2="{_f(xx)}" y1="{axis_y}" y2="{axis_y + 5}" '
            f'stroke="{AXIS_COLOUR}"/>'
        )
        parts.append(_text(xx, axis_y + 18, label))
    parts.append(_text(left + pw / 2, height - 6, x_label))
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    bars: Sequence[tuple[str, float | None]],
    *,
    chart_id: str,
    title: str,
    desc: str,
    y_label: str,
    lang: str,
) -> Markup:
    """Percentages (0 to 100) as vertical bars; None draws no bar and a dash."""
    bars = list(bars)[:60]
    width, height = 720, 200
    left, right, top, bottom = 64, 16, 20, 36
    pw, ph = width - left - right, height - top - bottom
    parts = _open(chart_id, width, height, title, desc)
    for i in range(5):
        v = 25 * i
        yy = top + ph * (1 - v / 100)
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{_f(yy)}" y2="{_f(yy)}" '
            f'stroke="{GRID_COLOUR}"/>'
        )
        parts.append(_text(left - 6, yy + 4, f"{v} %", "end"))
    parts.append(
        _text(14, top + ph / 2, y_label, extra=f' transform="rotate(-90 14 {_f(top + ph / 2)})"')
    )
    slot = pw / max(1, len(bars))
    for i, (label, value) in enumerate(bars):
        cx = left + slot * (i + 0.5)
        parts.append(_text(cx, top + ph + 16, label))
        if value is None:
            parts.append(_text(cx, top + ph - 4, "—"))
            continue
        v = min(100.0, max(0.0, value))
        h = ph * v / 100
        parts.append(
            f'<rect x="{_f(cx - slot * 0.35)}" y="{_f(top + ph - h)}" width="{_f(slot * 0.7)}" '
            f'height="{_f(h)}" fill="{STATE_COLOURS["available"]}" class="bar"/>'
        )
        parts.append(_text(cx, top + ph - h - 4, f"{number(v, lang, 1)} %"))
    parts.append(
        f'<path d="M{left} {top}V{top + ph}H{left + pw}" fill="none" stroke="{AXIS_COLOUR}"/>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))
