"""Timestamps as OCPP-J writes them: ISO 8601, UTC, with a ``Z`` suffix."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime | None = None) -> str:
    """Format ``moment`` (default: now) as ``2024-05-01T12:00:00.123Z``."""
    if moment is None:
        moment = datetime.now(UTC)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def as_timestamp(value: str | datetime | None) -> str:
    """Accept a ready string, a datetime (naive = UTC) or None (now) and return OCPP text."""
    if isinstance(value, str):
        return value
    return iso(value)


def parse(text: str | None) -> datetime | None:
    """Parse an OCPP timestamp; None when absent or unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def seconds_until(text: str | None) -> float | None:
    """Seconds from now until the timestamp (negative if past); None when unreadable."""
    moment = parse(text)
    if moment is None:
        return None
    return (moment - datetime.now(UTC)).total_seconds()
