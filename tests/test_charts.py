"""Charts and availability (issue 16, item 11), the pure parts: the availability arithmetic
of csms/availability.py on its edge cases, downsampling and derived power, and the SVG of
csms/web/charts.py as well-formed XML with the elements a reader and a screen reader need."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from csms import availability as av
from csms.availability import Segment
from csms.web import charts

T0 = datetime(2026, 3, 2, tzinfo=UTC)
H = timedelta(hours=1)
NS = {"s": "http://www.w3.org/2000/svg"}


def states(segments: list[Segment]) -> list[tuple[float, float, str]]:
    """Segments as (start hour, end hour, state) from T0."""
    return [((s.start - T0) / H, (s.end - T0) / H, s.state) for s in segments]


# ---------------------------------------------------------------------- availability


def test_status_before_the_window_gives_the_state_at_its_start() -> None:
    segs = av.timeline(
        T0,
        T0 + 10 * H,
        [(T0 - 50 * H, "Faulted"), (T0 - 5 * H, "Available"), (T0 + 4 * H, "Charging")],
    )
    assert states(segs) == [(0, 4, "available"), (4, 10, "occupied")]
    a = av.availability(segs, T0, T0 + 10 * H)
    assert a.percent == 100.0 and a.unknown_s == 0


def test_no_data_before_the_first_report_is_left_out_of_the_denominator() -> None:
    segs = av.timeline(T0, T0 + 10 * H, [(T0 + 2 * H, "Available"), (T0 + 6 * H, "Faulted")])
    assert states(segs) == [(0, 2, "unknown"), (2, 6, "available"), (6, 10, "faulted")]
    a = av.availability(segs, T0, T0 + 10 * H)
    assert a.unknown_s == 2 * 3600 and a.known_s == 8 * 3600
    assert a.percent == pytest.approx(50.0)  # 4 h up of 8 h known


def test_offline_overrides_the_status_and_reconnecting_restores_it() -> None:
    segs = av.timeline(
        T0,
        T0 + 10 * H,
        [(T0 - H, "Available")],
        [(T0 - H, True), (T0 + 3 * H, False), (T0 + 5 * H, True)],
    )
    assert states(segs) == [(0, 3, "available"), (3, 5, "offline"), (5, 10, "available")]
    assert av.availability(segs, T0, T0 + 10 * H).percent == pytest.approx(80.0)


def test_a_gap_without_connection_records_leaves_the_status_alone() -> None:
    # no connection record before 4 h: the status decides; the disconnect at 6 h counts
    segs = av.timeline(
        T0, T0 + 8 * H, [(T0, "Unavailable")], [(T0 + 4 * H, True), (T0 + 6 * H, False)]
    )
    assert states(segs) == [(0, 6, "unavailable"), (6, 8, "offline")]
    assert av.availability(segs, T0, T0 + 8 * H).percent == 0.0


def test_a_period_still_running_ends_now_and_a_cut_read_is_unknown() -> None:
    now = T0 + 5 * H
    segs = av.timeline(T0, now, [(T0, "Available"), (T0 + 4 * H, "Faulted")])
    assert states(segs) == [(0, 4, "available"), (4, 5, "faulted")]
    assert av.availability(segs, T0, now).percent == pytest.approx(80.0)
    # reports after `end` (a clock ahead) do not count
    segs = av.timeline(T0, now, [(T0, "Available"), (T0 + 6 * H, "Faulted")])
    assert states(segs) == [(0, 5, "available")]
    # what was read stops at 2 h: the rest is no data, not "still available"
    segs = av.timeline(T0, now, [(T0, "Available")], known_until=T0 + 2 * H)
    assert states(segs) == [(0, 2, "available"), (2, 5, "unknown")]
    assert av.availability(segs, T0, now).percent == 100.0


def test_csms_stopped_without_recording_the_disconnect() -> None:
    # the last record says connected, the station is not connected now: offline since its
    # last frame, not since the connect
    segs = av.timeline(
        T0,
        T0 + 10 * H,
        [(T0, "Available")],
        [(T0, True)],
        connected_now=False,
        last_seen=T0 + 7 * H,
    )
    assert states(segs) == [(0, 7, "available"), (7, 10, "offline")]
    segs = av.timeline(T0, T0 + 10 * H, [(T0, "Available")], [(T0 + H, True)], connected_now=False)
    assert states(segs) == [(0, 1, "available"), (1, 10, "offline")]


def test_no_data_at_all_gives_no_percentage_and_an_empty_window_nothing() -> None:
    segs = av.timeline(T0, T0 + H, [])
    assert states(segs) == [(0, 1, "unknown")]
    assert av.availability(segs, T0, T0 + H).percent is None
    assert av.timeline(T0, T0, [(T0, "Available")]) == []
    assert av.availability([], T0, T0).percent is None


def test_same_time_reports_keep_their_arrival_order() -> None:
    segs = av.timeline(T0, T0 + H, [(T0, "Faulted"), (T0, "Available")])
    assert states(segs) == [(0, 1, "available")]


def test_status_words() -> None:
    assert av.state_of("Available") == "available"
    for s in ("Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Reserved"):
        assert av.state_of(s) == "occupied"
    assert av.state_of("Faulted") == "faulted" and av.state_of("Unavailable") == "unavailable"
    assert av.state_of(None) == "unknown" and av.state_of("<script>") == "unknown"
    assert av.state_now("Charging", False) == "offline"
    assert av.state_now("Charging", True) == "occupied"


def test_fleet_and_daily_buckets_add_connector_time() -> None:
    end = T0 + 48 * H
    up = av.timeline(T0, end, [(T0, "Available")])
    down = av.timeline(T0, end, [(T0, "Faulted"), (T0 + 24 * H, "Available")])
    nothing = av.timeline(T0, end, [])
    total = av.fleet([up, down, nothing], T0, end)
    assert total.percent == pytest.approx(75.0)  # 72 h up of 96 h known
    days = av.buckets([up, down, nothing], end, 24 * H, 2)
    assert [(a - T0) / H for a, _, _ in days] == [0, 24]
    assert [b.percent for _, _, b in days] == [pytest.approx(50.0), pytest.approx(100.0)]
    assert av.buckets([up], end, H, 10**9)[0][0] == end - 1000 * H  # bounded


def test_clip_fills_what_a_timeline_does_not_cover() -> None:
    segs = [Segment(T0 + H, T0 + 2 * H, "available")]
    assert states(av.clip(segs, T0, T0 + 3 * H)) == [
        (0, 1, "unknown"),
        (1, 2, "available"),
        (2, 3, "unknown"),
    ]


# ---------------------------------------------------------------------- series


def test_downsample_is_bounded_and_keeps_the_ends() -> None:
    points = [(T0 + timedelta(seconds=i), float(i)) for i in range(100_000)]
    out = charts.downsample(points, 500, "last")
    assert len(out) <= 500
    assert out[0] == points[0] and out[-1] == points[-1]
    assert all(a[0] < b[0] for a, b in itertools.pairwise(out))
    means = charts.downsample(points, 500, "mean")
    assert len(means) <= 500
    # a bucket's mean lies within its values
    assert all(0 <= v <= 99_999 for _, v in means)
    small = points[:10]
    assert charts.downsample(small, 500) == small


def test_power_from_energy_deltas() -> None:
    pts = [(T0, 1000.0), (T0 + H, 8400.0), (T0 + H, 9000.0), (T0 + 2 * H, 100.0)]
    # 7.4 kWh in an hour; no time between two readings and a reset give no point
    assert charts.power_from_energy(pts) == [(T0 + H, pytest.approx(7.4))]
    half = [(T0, 0.0), (T0 + timedelta(minutes=30), 3700.0)]
    assert charts.power_from_energy(half) == [(half[1][0], pytest.approx(7.4))]


def test_nice_max_and_ticks() -> None:
    assert charts.nice_max(7.4) == 10
    assert charts.nice_max(22) == 25
    assert charts.nice_max(0) == 1
    assert charts.nice_max(float("nan")) == 1
    ticks = charts.time_ticks(T0, T0 + timedelta(days=7), "Europe/Lisbon")
    assert 3 <= len(ticks) <= 8 and all(label.count("-") == 1 for _, label in ticks)
    hours = charts.time_ticks(T0 + timedelta(minutes=7), T0 + 2 * H, "Atlantic/Azores")
    assert hours and all(":" in label for _, label in hours)
    assert charts.time_ticks(T0, T0, "UTC") == []


# ---------------------------------------------------------------------- SVG


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("role") == "img"
    title, desc = root.find("s:title", NS), root.find("s:desc", NS)
    assert title is not None and desc is not None
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    return root


def test_line_chart_is_well_formed_and_bounded() -> None:
    points = [(T0 + timedelta(seconds=10 * i), 7.0 + (i % 3)) for i in range(100_000)]
    svg = charts.line_chart(
        points,
        chart_id="c1",
        title="Power <&> 'x'",
        desc="desc",
        y_label="kW",
        x_label="Time (Lisbon)",
        tz_name="Europe/Lisbon",
        lang="pt",
    )
    root = parse(str(svg))
    assert root.find("s:title", NS).text == "Power <&> 'x'"  # escaped, read back
    line = root.find("s:polyline", NS)
    assert line is not None and int(line.get("data-points")) <= charts.MAX_POINTS
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "kW" in texts and "Time (Lisbon)" in texts
    assert "10" in texts  # the value axis (Portuguese numbers, 0 decimals here)
    assert len(str(svg)) < 40_000
    # no data: still a chart with its axes
    empty = parse(
        str(
            charts.line_chart(
                [],
                chart_id="c2",
                title="t",
                desc="d",
                y_label="kW",
                x_label="x",
                tz_name=None,
                lang="en",
            )
        )
    )
    assert empty.find("s:polyline", NS) is None


def test_timeline_chart_bands_and_legend() -> None:
    segs = av.timeline(T0, T0 + 24 * H, [(T0, "Available"), (T0 + 12 * H, "Faulted")])
    # a flapping connector: thousands of segments, bounded rectangles
    flap = av.timeline(
        T0,
        T0 + 24 * H,
        [
            (T0 + timedelta(seconds=7 * i), "Available" if i % 2 else "Faulted")
            for i in range(10_000)
        ],
    )
    svg = charts.timeline_chart(
        [("Conector 1", segs, 50.0), ("Conector 2", flap, None)],
        T0,
        T0 + 24 * H,
        chart_id="tl",
        title="Timeline",
        desc="d",
        x_label="Hora",
        tz_name="Europe/Lisbon",
        lang="pt",
        state_labels={"available": "Livre"},
    )
    root = parse(str(svg))
    rects = list(root.iter("{http://www.w3.org/2000/svg}rect"))
    band1 = [r for r in rects if r.get("data-state") and float(r.get("y")) < 60]
    assert [r.get("data-state") for r in band1] == ["available", "faulted"]
    assert float(band1[0].get("width")) == pytest.approx(float(band1[1].get("width")), abs=1)
    assert {r.get("data-legend") for r in rects if r.get("data-legend")} == set(av.STATES)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "50,0 %" in texts and "—" in texts and "Livre" in texts
    assert len(rects) < 2 * 1100 + 20


def test_bar_chart() -> None:
    svg = charts.bar_chart(
        [("03-01", 99.5), ("03-02", None), ("03-03", 150.0)],
        chart_id="b",
        title="Fleet",
        desc="d",
        y_label="Availability",
        lang="en",
    )
    root = parse(str(svg))
    bars = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.get("class") == "bar"]
    assert len(bars) == 2
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "99.5 %" in texts and "100.0 %" in texts and "—" in texts
