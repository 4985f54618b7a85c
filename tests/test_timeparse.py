from datetime import UTC, datetime

import pytest

from csms.timeparse import parse_charger_time, to_iso, to_ocpp

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected", "corrected"),
    [
        ("2024-07-10T18:23:03Z", datetime(2024, 7, 10, 18, 23, 3, tzinfo=UTC), False),
        (
            "2023-04-15T11:04:45.659+00:00",
            datetime(2023, 4, 15, 11, 4, 45, 659000, tzinfo=UTC),
            False,
        ),
        ("2024-04-26T14:35:02+02", datetime(2024, 4, 26, 12, 35, 2, tzinfo=UTC), True),
        ("2024-04-26T14:35:02+0200", datetime(2024, 4, 26, 12, 35, 2, tzinfo=UTC), True),
        ("2024-04-26T14:35:02-01:30", datetime(2024, 4, 26, 16, 5, 2, tzinfo=UTC), True),
        ("2023-10-19T15:28:07", datetime(2023, 10, 19, 15, 28, 7, tzinfo=UTC), True),
        (
            "2025-04-23T16:49:54.206123456Z",
            datetime(2025, 4, 23, 16, 49, 54, 206123, tzinfo=UTC),
            False,
        ),
        ("2024-01-01 10:00:00Z", datetime(2024, 1, 1, 10, tzinfo=UTC), False),
    ],
)
def test_lenient_shapes(text: str, expected: datetime, corrected: bool) -> None:
    parsed = parse_charger_time(text, NOW)
    assert parsed.value == expected
    assert parsed.value.tzinfo is not None
    assert parsed.corrected is corrected
    if corrected:
        assert parsed.original == text and parsed.correction


@pytest.mark.parametrize(
    "text",
    [
        "1970-01-01T00:00:00.740Z",  # clock not set
        "0001-01-01T00:00:00Z",  # year 1
        "2030-01-01T00:00:00Z",  # far in the future
        "not-a-date",
        "2024-02-30T00:00:00Z",  # impossible day
        "2024-01-01T25:00:00Z",
        "",
    ],
)
def test_absurd_times_become_arrival_time_and_keep_the_original(text: str) -> None:
    parsed = parse_charger_time(text, NOW)
    assert parsed.value == NOW
    assert parsed.original == text
    assert parsed.correction


def test_missing_timestamp_is_arrival_time_without_correction() -> None:
    parsed = parse_charger_time(None, NOW)
    assert parsed.value == NOW and not parsed.corrected


def test_small_future_skew_is_kept() -> None:
    parsed = parse_charger_time("2026-11-23T12:05:00Z", NOW)
    assert parsed.value == datetime(2026, 11, 23, 12, 5, tzinfo=UTC) and not parsed.corrected


def test_output_shapes() -> None:
    t = datetime(2024, 1, 2, 3, 4, 5, 678900, tzinfo=UTC)
    assert to_iso(t) == "2024-01-02T03:04:05Z"
    assert to_ocpp(t) == "2024-01-02T03:04:05.678Z"
