"""What the operator decides about each OCPI peer (issue 19): a pure core.

A peer's powers are the operator's decision, never the peer's claim. Next to its grant (one
role for some parties, :class:`ocpi_bridge.store.Grant`) each peer has a policy:

- ``name``: what the operator calls it (shown on the pages, in logs);
- ``uses``: the modules of ours it may call (a module not listed answers HTTP 403);
- ``receives``: what we push to it (locations, sessions, cdrs, tariffs);
- ``mobie``: MOBI.E's rules and profile apply to it (its pushes, whitelist-only tokens, no
  reservations); every other peer gets plain OCPI;
- ``realtime_auth``: cards that no pushed token matches, and its own tokens whitelisted
  ``ALLOWED`` or ``NEVER``, are asked of it (``POST tokens/{uid}/authorize``);
- ``hidden``: Location ids it must not see (pushed or pulled);
- ``tariffs``: our tariff id -> the tariff id it gets instead (partners with their own
  prices); a tariff that is some peer's replacement is private: only that peer sees it;
- ``version``: the OCPI version to use with it (None: the highest both speak).

A token A carries a policy; the peer that registers with it gets that policy. The operator
may change it at any time (web interface, API), and suspend the peer: a suspended peer is
refused (HTTP 403) and receives nothing until resumed; what it missed is pushed then.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

# the modules of ours a peer may call (beyond versions and credentials, always open)
CALLABLE = (
    "locations",
    "sessions",
    "cdrs",
    "tariffs",
    "tokens",
    "commands",
    "chargingprofiles",
    "hubclientinfo",
)
PUSHED = ("locations", "sessions", "cdrs", "tariffs")
# what each role may be given at all; a policy never exceeds it
ROLE_USES = {
    "HUB": frozenset(CALLABLE) - {"chargingprofiles"},
    "EMSP": frozenset(CALLABLE) - {"chargingprofiles", "hubclientinfo"},
    "SCSP": frozenset({"locations", "tariffs", "chargingprofiles"}),
}
ROLE_RECEIVES = {
    "HUB": frozenset(PUSHED),
    "EMSP": frozenset(PUSHED),
    "SCSP": frozenset({"locations", "tariffs"}),
}
VERSIONS = ("2.2.1", "2.2", "2.1.1")
MAX_NAME = 80
MAX_HIDDEN = 1000
MAX_TARIFFS = 200
_ID = re.compile(r"^[A-Za-z0-9._\-]{1,36}$")  # OCPI CiString(36) ids we accept


@dataclass(frozen=True)
class PeerPolicy:
    name: str = ""
    uses: frozenset[str] = frozenset(CALLABLE)
    receives: frozenset[str] = frozenset(PUSHED)
    mobie: bool = False
    realtime_auth: bool = False
    hidden: frozenset[str] = frozenset()
    tariffs: Mapping[str, str] = field(default_factory=dict)
    version: str | None = None

    # ------------------------------------------------------------------ defaults

    @classmethod
    def default(cls, role: str | None, mobie_mode: bool = False, name: str = "") -> PeerPolicy:
        """What a peer gets when the operator says nothing more than its role: everything
        the role allows; MOBI.E's rules for the hub in MOBI.E mode; real-time authorization
        for an eMSP that is not MOBI.E."""
        role = role or "EMSP"
        if mobie_mode and role == "HUB":
            # MOBI.E's profile: no hubclientinfo, no tariffs pushed (the operator may add them)
            return cls(
                name=name,
                uses=ROLE_USES["HUB"] - {"hubclientinfo"},
                receives=frozenset({"locations", "sessions", "cdrs"}),
                mobie=True,
            )
        return cls(
            name=name,
            uses=ROLE_USES.get(role, frozenset()),
            receives=ROLE_RECEIVES.get(role, frozenset()),
            realtime_auth=role == "EMSP",
        )

    # ------------------------------------------------------------------ input

    @classmethod
    def make(
        cls, role: str, data: Mapping[str, Any] | None, base: PeerPolicy | None = None
    ) -> PeerPolicy:
        """From user input (API body, web form, CLI) over ``base`` (default: the role's
        defaults): ValueError names the field that is wrong. Never more than the role may
        have."""
        policy = base or cls.default(role)
        if data is None:
            return policy.within(role)
        if not isinstance(data, Mapping):
            raise ValueError("policy: an object is expected")
        unknown = sorted(set(data) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown field")
        changes: dict[str, Any] = {}
        if "name" in data:
            name = data["name"]
            if not isinstance(name, str) or len(name.strip()) > MAX_NAME:
                raise ValueError(f"name: text of at most {MAX_NAME} characters")
            if any(ord(c) < 32 or ord(c) == 127 for c in name):
                raise ValueError("name: control characters are not allowed")
            changes["name"] = name.strip()
        for key, allowed in (("uses", ROLE_USES), ("receives", ROLE_RECEIVES)):
            if key in data:
                values = _words(data[key], key)
                may = allowed.get(role, frozenset())
                extra = sorted(values - may)
                if extra:
                    raise ValueError(f"{key}: {extra[0]!r} is not for a peer granted {role}")
                changes[key] = frozenset(values)
        for key in ("mobie", "realtime_auth"):
            if key in data:
                value = data[key]
                if not isinstance(value, bool):
                    raise ValueError(f"{key}: true or false")
                changes[key] = value
        if changes.get("mobie", policy.mobie) and role != "HUB":
            raise ValueError("mobie: only a peer granted HUB is MOBI.E")
        if "hidden" in data:
            hidden = _words(data["hidden"], "hidden", upper=False, ids=True)
            if len(hidden) > MAX_HIDDEN:
                raise ValueError(f"hidden: at most {MAX_HIDDEN} Locations")
            changes["hidden"] = frozenset(hidden)
        if "tariffs" in data:
            changes["tariffs"] = _tariff_map(data["tariffs"])
        if "version" in data:
            version = data["version"]
            if version in (None, ""):
                changes["version"] = None
            elif version not in VERSIONS:
                raise ValueError(f"version: one of {', '.join(VERSIONS)}, or empty")
            else:
                changes["version"] = version
        return replace(policy, **changes).within(role)

    def within(self, role: str) -> PeerPolicy:
        """This policy cut to what ``role`` may have (a grant changed, a stored policy)."""
        return replace(
            self,
            uses=self.uses & ROLE_USES.get(role, frozenset()),
            receives=self.receives & ROLE_RECEIVES.get(role, frozenset()),
            mobie=self.mobie and role == "HUB",
        )

    # ------------------------------------------------------------------ storage

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "uses": sorted(self.uses),
                "receives": sorted(self.receives),
                "mobie": self.mobie,
                "realtime_auth": self.realtime_auth,
                "hidden": sorted(self.hidden),
                "tariffs": dict(sorted(self.tariffs.items())),
                "version": self.version,
            },
            separators=(",", ":"),
        )

    def view(self) -> dict[str, Any]:
        """For the API and the pages."""
        return json.loads(self.to_json())

    @classmethod
    def from_json(cls, text: str | None, role: str | None, mobie_mode: bool) -> PeerPolicy:
        """A stored policy; None (a peer from before policies): the role's defaults."""
        role = role or "EMSP"
        if not text:
            return cls.default(role, mobie_mode)
        try:
            return cls.make(role, json.loads(text), base=cls.default(role, mobie_mode))
        except (ValueError, TypeError):
            # a stored policy that no longer validates: the safe reading is the narrowest
            return replace(cls.default(role, mobie_mode), uses=frozenset(), receives=frozenset())

    # ------------------------------------------------------------------ decisions

    def may_use(self, module: str) -> bool:
        return module in self.uses

    @cached_property
    def _hidden_upper(self) -> frozenset[str]:
        return frozenset(h.upper() for h in self.hidden)

    def sees_location(self, location_id: str) -> bool:
        """(Asked for every EVSE status pushed to every peer: the set is made once.)"""
        return location_id.upper() not in self._hidden_upper

    def tariff_id(self, ours: str) -> str:
        """The tariff id this peer sees on a connector that has ``ours``."""
        for k, v in self.tariffs.items():
            if k.upper() == ours.upper():
                return v
        return ours


def private_tariffs(policies: Iterable[PeerPolicy]) -> frozenset[str]:
    """Tariffs that are some peer's replacement: seen only by the peers that have them."""
    return frozenset(t.upper() for p in policies for t in p.tariffs.values())


def tariffs_for(
    policy: PeerPolicy, tariff_ids: Iterable[str], private: frozenset[str]
) -> list[str]:
    """The tariff ids a peer may see (pulled or pushed): every public tariff, and the
    private ones that are its own replacements."""
    own = {t.upper() for t in policy.tariffs.values()}
    return [t for t in tariff_ids if t.upper() not in private or t.upper() in own]


def location_for(policy: PeerPolicy, location: dict[str, Any]) -> dict[str, Any]:
    """A Location as this peer sees it: its connectors' ``tariff_ids`` replaced by the
    peer's own tariffs, and MOBI.E's extensions (``mobie_*``) for MOBI.E only (a copy; the
    input is not changed)."""
    extensions = not policy.mobie and any(k.startswith("mobie_") for k in location)
    if not policy.tariffs and not extensions:
        return location
    out = {k: v for k, v in location.items() if policy.mobie or not k.startswith("mobie_")}
    if policy.tariffs:
        out["evses"] = [evse_for(policy, e) for e in location.get("evses", [])]
    return out


def evse_for(policy: PeerPolicy, evse: dict[str, Any]) -> dict[str, Any]:
    if not policy.tariffs:
        return evse
    out = dict(evse)
    out["connectors"] = [connector_for(policy, c) for c in evse.get("connectors", [])]
    return out


def connector_for(policy: PeerPolicy, connector: dict[str, Any]) -> dict[str, Any]:
    ids = connector.get("tariff_ids")
    if not policy.tariffs or not ids:
        return connector
    mapped: list[str] = []
    for t in ids:
        m = policy.tariff_id(t)
        if m not in mapped:
            mapped.append(m)
    return {**connector, "tariff_ids": mapped}


def _words(value: Any, key: str, upper: bool = False, ids: bool = False) -> frozenset[str]:
    if isinstance(value, str):
        value = [w for w in re.split(r"[\s,;]+", value) if w]
    if not isinstance(value, list | tuple | set | frozenset):
        raise ValueError(f"{key}: a list is expected")
    if len(value) > MAX_HIDDEN:
        raise ValueError(f"{key}: at most {MAX_HIDDEN} entries")
    out: set[str] = set()
    for v in value:
        if not isinstance(v, str) or not v:
            raise ValueError(f"{key}: entries are non-empty texts")
        if ids:
            if not _ID.match(v):
                raise ValueError(f"{key}: {v[:40]!r} is not a Location id")
            out.add(v)
        else:
            out.add(v.strip().lower())
    return frozenset(out)


def _tariff_map(value: Any) -> dict[str, str]:
    if isinstance(value, str):  # "OURS=THEIRS, ..." (web form)
        pairs: dict[str, Any] = {}
        for part in (p for p in re.split(r"[\s,;]+", value) if p):
            ours, sep, theirs = part.partition("=")
            if not sep:
                raise ValueError(f"tariffs: {part[:40]!r} is not OURS=THEIRS")
            pairs[ours] = theirs
        value = pairs
    if not isinstance(value, Mapping):
        raise ValueError("tariffs: an object {our tariff id: the tariff id this peer gets}")
    if len(value) > MAX_TARIFFS:
        raise ValueError(f"tariffs: at most {MAX_TARIFFS}")
    out: dict[str, str] = {}
    for ours, theirs in value.items():
        for t in (ours, theirs):
            if not isinstance(t, str) or not _ID.match(t):
                raise ValueError(f"tariffs: {str(t)[:40]!r} is not a tariff id")
        if ours.upper() == theirs.upper():
            raise ValueError(f"tariffs: {ours!r} replaced by itself")
        if any(k.upper() == ours.upper() for k in out):
            raise ValueError(f"tariffs: {ours!r} is given twice")
        out[ours] = theirs
    return out
