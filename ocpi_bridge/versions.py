"""What an object we push or serve looks like in the peer's OCPI version.

We build every object as OCPI 2.2.1; a peer on another version gets it converted here, in
one place: 2.2 (tokens in plain text, otherwise as 2.2.1 for what we send) and 2.1.1
(ocpi_bridge.v211).
"""

from __future__ import annotations

from typing import Any

from . import v211

KINDS = ("location", "evse", "connector", "session", "cdr", "tariff", "session_patch")


def outgoing(
    kind: str,
    obj: dict[str, Any],
    version: str,
    *,
    location: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``obj`` (OCPI 2.2.1, of ``kind``) as a peer on ``version`` reads it. A 2.1.1 Session
    or CDR carries its Location: pass ours (2.2.1, as this peer sees it) as ``location``;
    ``session_patch`` is the body of a Session PATCH."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if version == v211.VERSION:
        return v211.outgoing(kind, obj, location=location)
    return obj


def needs_location(kind: str, version: str) -> bool:
    """Does ``outgoing(kind, ..., version)`` want the object's Location?"""
    return version == v211.VERSION and kind in ("session", "cdr")


def location_id(kind: str, obj: dict[str, Any]) -> str | None:
    """The id of the Location a Session or CDR (2.2.1) took place at."""
    if kind == "session":
        return obj.get("location_id")
    if kind == "cdr":
        return (obj.get("cdr_location") or {}).get("id")
    return None


def credentials(ours: dict[str, Any], version: str) -> dict[str, Any]:
    """Our Credentials (2.2.1) as a peer on ``version`` reads them."""
    return v211.credentials_out(ours) if version == v211.VERSION else ours


def uses_base64(version: str) -> bool:
    """Does a peer on ``version`` expect its token Base64-encoded? Only 2.2.1 does (2.2 and
    2.1.1 send tokens in plain text)."""
    return version not in ("2.2", v211.VERSION)


def endpoints(listed: list[dict[str, Any]], version: str) -> list[dict[str, Any]]:
    """Our version details' endpoints as ``version`` lists them (2.1.1: without roles)."""
    return v211.details(listed) if version == v211.VERSION else listed
