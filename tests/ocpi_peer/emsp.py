"""An OCPI 2.2.1 eMSP test peer built on the extrawest-ocpi framework (package ``py_ocpi``).

Run it with the PEER venv's python (pydantic 1 world), never with the project's venv::

    .venv-peer/bin/python tests/ocpi_peer/emsp.py --port 0 --party-id EMS --country-code PT \
        --token-a XYZ

When it is listening it prints ONE JSON line on stdout (``{"event": "ready", "port": ..,
"versions_url": .., ...}``) and then only logs to stderr.  SIGTERM/SIGINT stop it.

What comes from the library (the "independent implementation"): every OCPI route of the eMSP
side (versions, version details, credentials Receiver incl. its call-backs to the client's
versions/details, locations/sessions/cdrs/tariffs Receivers, tokens Sender, commands result
Receiver), its request validation (pydantic 1 models), its error answers and its authorization
checks.  We only provide what the framework asks an application for: an in-memory CRUD adapter
and an authenticator (the lists of valid tokens).

What is ours (the library has no client for it): the peer acting as a client -- the credentials
handshake as Sender, pulling our Sender modules, pushing tokens, sending commands, renewing and
deleting credentials.  Those requests are made with httpx and built/validated with the library's
own pydantic models where it has them.  An optional ``via: "library"`` token push uses the
library's own push client (``py_ocpi.core.push``).

Everything is recorded in memory and readable through a small JSON control API under
``/_control/`` on the same port (no authentication; loopback only).  See tests/ocpi_peer/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextvars
import copy
import json
import os
import re
import secrets
import socket
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

# Third-party imports that do not read the library settings.  (py_ocpi itself reads its settings
# from the environment at import time, so it is only imported inside build_app(), after main()
# has set the environment.)
import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

OCPI_PREFIX = "ocpi"
RECEIVER_MODULES = ("locations", "sessions", "cdrs", "tariffs")
STORE_MODULES = ("locations", "sessions", "cdrs", "tariffs", "tokens")
FUNCTIONAL_MODULES = {
    "locations",
    "sessions",
    "cdrs",
    "tariffs",
    "tokens",
    "commands",
    "chargingprofiles",
}
CONFIG_MODULES = {"credentials", "hubclientinfo", "clientinfo", "versions", "details"}
ROUTING_HEADERS = (
    "ocpi-from-country-code",
    "ocpi-from-party-id",
    "ocpi-to-country-code",
    "ocpi-to-party-id",
)
MODEL_BY_MODULE = {
    "locations": ("Location", "locations"),
    "sessions": ("Session", "sessions"),
    "cdrs": ("Cdr", "cdrs"),
    "tariffs": ("Tariff", "tariffs"),
    "tokens": ("Token", "tokens"),
}
COMMAND_MODELS = {
    "START_SESSION": "StartSession",
    "STOP_SESSION": "StopSession",
    "RESERVE_NOW": "ReserveNow",
    "CANCEL_RESERVATION": "CancelReservation",
    "UNLOCK_CONNECTOR": "UnlockConnector",
}
LINK_NEXT = re.compile(r"<([^>]*)>\s*;\s*rel\s*=\s*\"?next\"?", re.IGNORECASE)
TIMESTAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?P<frac>\.\d+)?(?P<tz>Z|[+-]\d{2}:\d{2})?$"
)

# The incoming request being handled (set by the recorder, read by the CRUD adapter so that a
# stored object can be linked to the raw body that wrote it).
CURRENT_REQUEST: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "current_request", default=None
)
# Who started an outgoing HTTP request: "library" unless a control action set it.
ORIGIN: contextvars.ContextVar[str] = contextvars.ContextVar("origin", default="library")

PEER: Peer  # set in main()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_token(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def b64(token: str) -> str:
    return base64.b64encode(token.encode("utf-8")).decode("ascii")


def plain(data: Any) -> Any:
    """Library model dicts (enums, str subclasses) -> plain JSON values."""
    return json.loads(json.dumps(jsonable_encoder(data)))


def parse_json(raw: bytes) -> tuple[Any, str | None]:
    if not raw:
        return None, None
    try:
        return json.loads(raw), None
    except ValueError as exc:
        return raw.decode("utf-8", "replace"), f"body is not valid JSON: {exc}"


def join_url(base: str, *parts: str) -> str:
    """Join with exactly one slash, whatever the advertised URL ends with."""
    url = base.rstrip("/")
    for part in parts:
        part = str(part).strip("/")
        if part:
            url = f"{url}/{part}"
    return url


def path_module(path: str) -> tuple[str | None, str | None, list[str]]:
    """('/ocpi/emsp/2.2.1/locations/PT/ABC/1') -> ('2.2.1', 'locations', ['PT','ABC','1'])."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == OCPI_PREFIX and parts[1] == "versions":
        return None, "versions", []
    if len(parts) >= 3 and parts[0] == OCPI_PREFIX and parts[2] == "details":
        return parts[1], "details", []
    if len(parts) >= 4 and parts[0] == OCPI_PREFIX:
        return parts[2], parts[3], parts[4:]
    return None, None, []


def timestamp_findings(value: Any, where: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found += timestamp_findings(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += timestamp_findings(item, f"{where}[{index}]")
    elif isinstance(value, str):
        match = TIMESTAMP.match(value)
        if match:
            tz = match.group("tz")
            if tz and tz != "Z":
                found.append(f"timestamp with a UTC offset (OCPI wants Z) at {where}: {value}")
            frac = match.group("frac")
            if frac and len(frac) > 4:
                found.append(f"timestamp with more than 3 fractional digits at {where}: {value}")
    return found


def token_findings(auth: str | None, version: str | None) -> list[str]:
    if auth is None:
        return ["missing Authorization header"]
    if not auth.startswith("Token "):
        return ["Authorization header does not start with 'Token '"]
    value = auth[len("Token ") :]
    if version and version.startswith("2.2"):
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ["token is not Base64 (OCPI 2.2.1 wants Token <base64(token)>)"]
        if not decoded or not all(0x21 <= ord(ch) <= 0x7E for ch in decoded):
            return ["Base64-decoded token is not printable non-whitespace ASCII"]
    return []


def id_mismatch_findings(method: str, module: str | None, rest: list[str], body: Any) -> list[str]:
    if method != "PUT" or not isinstance(body, dict) or module is None:
        return []
    found: list[str] = []

    def compare(field: str, url_value: str) -> None:
        value = body.get(field)
        if value is None:
            found.append(f"PUT body has no {field} (URL says {url_value})")
        elif str(value).lower() != url_value.lower():
            found.append(f"PUT body {field}={value!r} differs from URL {url_value!r}")

    if module in ("locations", "sessions", "tariffs", "tokens") and len(rest) >= 3:
        if len(rest) == 3:
            compare("country_code", rest[0])
            compare("party_id", rest[1])
            compare("uid" if module == "tokens" else "id", rest[2])
        elif module == "locations" and len(rest) == 4:
            compare("uid", rest[3])
        elif module == "locations" and len(rest) == 5:
            compare("id", rest[4])
    return found


def request_findings(
    method: str, path: str, headers: dict[str, str], body: Any, body_error: str | None
) -> list[str]:
    """OCPI-conformance hints about a request the peer RECEIVED (i.e. about its caller)."""
    found: list[str] = []
    version, module, rest = path_module(path)
    request_id = headers.get("x-request-id")
    correlation_id = headers.get("x-correlation-id")
    if not request_id:
        found.append("missing X-Request-ID")
    if not correlation_id:
        found.append("missing X-Correlation-ID")
    if request_id and correlation_id and request_id == correlation_id:
        found.append("X-Request-ID equals X-Correlation-ID")
    found += token_findings(headers.get("authorization"), version)
    if module in FUNCTIONAL_MODULES:
        found += [f"missing {name} header" for name in ROUTING_HEADERS if name not in headers]
    elif module in CONFIG_MODULES:
        present = [name for name in ROUTING_HEADERS if name in headers]
        if present:
            found.append(f"routing headers on a configuration module: {', '.join(present)}")
    if method in ("POST", "PUT", "PATCH"):
        content_type = headers.get("content-type", "")
        if body is not None and not content_type.startswith("application/json"):
            found.append(f"body sent with Content-Type {content_type!r}")
        if body_error:
            found.append(body_error)
    if method == "PATCH" and module in ("locations", "sessions", "tokens"):
        if isinstance(body, dict) and "last_updated" not in body:
            found.append("PATCH without last_updated")
    found += id_mismatch_findings(method, module, rest, body)
    found += timestamp_findings(body)
    return found


def response_findings(
    sent_headers: dict[str, str],
    status: int,
    headers: dict[str, str],
    body: Any,
    module: str | None,
) -> list[str]:
    """OCPI-conformance hints about a response the peer GOT from the other side."""
    found: list[str] = []
    if not 200 <= status < 300:
        found.append(f"HTTP status {status}")
    if not isinstance(body, dict):
        found.append("response body is not a JSON object (no OCPI envelope)")
    else:
        if not isinstance(body.get("status_code"), int):
            found.append("envelope has no integer status_code")
        elif not 1000 <= body["status_code"] < 2000:
            found.append(f"envelope status_code {body['status_code']}")
        stamp = body.get("timestamp")
        if not isinstance(stamp, str) or not TIMESTAMP.match(stamp):
            found.append(f"envelope timestamp missing or not an OCPI DateTime: {stamp!r}")
        found += timestamp_findings(body.get("data"), "data")
    for name in ("x-request-id", "x-correlation-id"):
        if name in sent_headers and headers.get(name) != sent_headers[name]:
            found.append(
                f"{name} not echoed (sent {sent_headers[name]!r}, got {headers.get(name)!r})"
            )
    if module in FUNCTIONAL_MODULES:
        found += [
            f"response has no {name} header" for name in ROUTING_HEADERS if name not in headers
        ]
    return found


def envelope_ok(exchange: dict[str, Any]) -> bool:
    response = exchange.get("response")
    if not response:
        return False
    body = response.get("json")
    return (
        200 <= response["status"] < 300
        and isinstance(body, dict)
        and isinstance(body.get("status_code"), int)
        and 1000 <= body["status_code"] < 2000
    )


def find_endpoint(endpoints: list[dict[str, Any]], module: str, role: str | None) -> str | None:
    fallback = None
    for endpoint in endpoints or []:
        if not isinstance(endpoint, dict) or endpoint.get("identifier") != module:
            continue
        if role is None or endpoint.get("role") == role:
            return endpoint.get("url")
        fallback = fallback or endpoint.get("url")
    return fallback


class Peer:
    """All state of the peer: tokens, registrations, recorded traffic, stored objects."""

    def __init__(self, args: argparse.Namespace, port: int) -> None:
        self.args = args
        self.host = args.host
        self.port = port
        scheme = "https" if args.ssl_certfile else "http"
        self.base_url = f"{scheme}://{args.host}:{port}"
        self.versions_url = f"{self.base_url}/{OCPI_PREFIX}/versions"
        self.versions = [v.strip() for v in args.versions.split(",") if v.strip()]
        self.details_urls = {v: f"{self.base_url}/{OCPI_PREFIX}/{v}/details" for v in self.versions}
        self.country_code = args.country_code
        self.party_id = args.party_id
        self.role = args.role
        self.tokens_a: list[str] = [args.token_a]
        # token the peer accepts -> connection with the CPO (see state())
        self.connections: dict[str, dict[str, Any]] = {}
        self.pending_tokens: list[str] = []  # our token B while we register/renew
        self.requests: list[dict[str, Any]] = []
        self.outgoing: list[dict[str, Any]] = []
        self.objects: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in STORE_MODULES}
        self.commands: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self.client: httpx.AsyncClient | None = None

    # ---- tokens -----------------------------------------------------------------------------
    def accepted_tokens(self) -> list[str]:
        return list(self.connections) + list(self.pending_tokens)

    def current_connection(self) -> dict[str, Any] | None:
        if not self.connections:
            return None
        return max(self.connections.values(), key=lambda c: c["seq"])

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def own_credentials(self, token: str, version: str = "2.2.1") -> dict[str, Any]:
        business = {"name": self.args.name}
        if version.startswith("2.1"):
            return {
                "token": token,
                "url": self.versions_url,
                "business_details": business,
                "party_id": self.party_id,
                "country_code": self.country_code,
            }
        return {
            "token": token,
            "url": self.versions_url,
            "roles": [
                {
                    "role": self.role,
                    "business_details": business,
                    "party_id": self.party_id,
                    "country_code": self.country_code,
                }
            ],
        }

    def state(self) -> dict[str, Any]:
        return {
            "tokens_a": list(self.tokens_a),
            "pending_tokens": list(self.pending_tokens),
            "connections": list(self.connections.values()),
            "current": self.current_connection(),
        }

    # ---- outgoing HTTP ------------------------------------------------------------------------
    def http(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=self.args.http_timeout)
        return self.client

    def routing_headers(self, connection: dict[str, Any] | None) -> dict[str, str]:
        headers = {
            "OCPI-from-country-code": self.country_code,
            "OCPI-from-party-id": self.party_id,
        }
        role = cpo_role(connection)
        if role:
            headers["OCPI-to-country-code"] = role.get("country_code", "")
            headers["OCPI-to-party-id"] = role.get("party_id", "")
        return headers

    async def call(
        self,
        method: str,
        url: str,
        *,
        token: str | None,
        version: str,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        module: str | None = None,
        connection: dict[str, Any] | None = None,
        auth: str = "auto",
        headers: dict[str, str | None] | None = None,
        routing: bool | None = None,
        origin: str = "control",
    ) -> dict[str, Any]:
        """One OCPI request with the OCPI headers; returns request, response and findings."""
        sent: dict[str, str] = {
            "X-Request-ID": str(uuid.uuid4()),
            "X-Correlation-ID": str(uuid.uuid4()),
        }
        if auth == "auto":
            auth = "raw" if version.startswith("2.1") or version.startswith("2.0") else "base64"
        if token is not None and auth == "base64":
            sent["Authorization"] = f"Token {b64(token)}"
        elif token is not None and auth == "raw":
            sent["Authorization"] = f"Token {token}"
        if routing is None:
            routing = module in FUNCTIONAL_MODULES
        if routing:
            sent.update(self.routing_headers(connection))
        for name, value in (headers or {}).items():
            for existing in [k for k in sent if k.lower() == name.lower()]:
                del sent[existing]
            if value is not None:
                sent[name] = value
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        exchange: dict[str, Any] = {
            "request": {
                "method": method,
                "url": url,
                "params": clean_params,
                "headers": sent,
                "json": json_body,
            },
            "response": None,
            "error": None,
            "findings": [],
        }
        started = time.monotonic()
        token_origin = ORIGIN.set(origin)
        try:
            response = await self.http().request(
                method,
                url,
                params=clean_params or None,
                json=json_body if json_body is not None else None,
                headers=sent,
            )
        except httpx.HTTPError as exc:
            exchange["error"] = f"{type(exc).__name__}: {exc}"
            return exchange
        finally:
            ORIGIN.reset(token_origin)
            exchange["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
        body, body_error = parse_json(response.content)
        response_headers = {k.lower(): v for k, v in response.headers.items()}
        exchange["request"]["url"] = str(response.request.url)
        exchange["response"] = {
            "status": response.status_code,
            "headers": response_headers,
            "json": body if body_error is None else None,
            "text": body if body_error is not None else None,
        }
        lowered = {k.lower(): v for k, v in sent.items()}
        exchange["findings"] = response_findings(
            lowered, response.status_code, response_headers, body, module
        )
        return exchange


def cpo_role(connection: dict[str, Any] | None) -> dict[str, Any] | None:
    if not connection:
        return None
    credentials = connection.get("cpo_credentials") or {}
    roles = credentials.get("roles")
    if isinstance(roles, list) and roles:
        for role in roles:
            if isinstance(role, dict) and str(role.get("role", "")).upper() == "CPO":
                return role
        first = roles[0]
        return first if isinstance(first, dict) else None
    if credentials.get("party_id"):  # OCPI 2.1.1 credentials
        return {"party_id": credentials["party_id"], "country_code": credentials["country_code"]}
    return None


# ================================================================================================
# What the framework asks the application for: authenticator and CRUD adapter (in memory)
# ================================================================================================


def build_app() -> FastAPI:
    """Create the extrawest-ocpi eMSP application (imports py_ocpi: settings already set)."""
    from py_ocpi.core.adapter import BaseAdapter
    from py_ocpi.core.authentication.authenticator import Authenticator
    from py_ocpi.core.enums import ModuleID, RoleEnum
    from py_ocpi.main import get_application
    from py_ocpi.modules.versions.enums import VersionNumber

    class MemoryAuthenticator(Authenticator):
        @classmethod
        async def get_valid_token_c(cls) -> list[str]:
            # "token C" in the library = every token that gives full access to the peer: the
            # token C it issued when a CPO registered with it, and its own token B when it
            # registered with a CPO.
            return PEER.accepted_tokens()

        @classmethod
        async def get_valid_token_a(cls) -> list[str]:
            return list(PEER.tokens_a)

    app = get_application(
        version_numbers=[VersionNumber(v) for v in PEER.versions],
        roles=[RoleEnum.emsp],
        crud=MemoryCrud(),
        modules=[
            ModuleID.credentials_and_registration,
            ModuleID.locations,
            ModuleID.sessions,
            ModuleID.cdrs,
            ModuleID.tariffs,
            ModuleID.tokens,
            ModuleID.commands,
            # a smart charging party (--role SCSP) also takes the CPO's ChargingProfile results,
            # POSTed to {base}/ocpi/emsp/2.2.1/chargingprofiles/?... (the library's route); read
            # them with GET /_control/requests?path=chargingprofiles
            *([ModuleID.charging_profile] if PEER.role == "SCSP" else []),
        ],
        authenticator=MemoryAuthenticator,
        adapter=BaseAdapter,
    )
    return app


def _value(kwargs: dict[str, Any], name: str) -> str | None:
    value = kwargs.get(name)
    return None if value is None else str(value)


class MemoryCrud:
    """The CRUD adapter the library calls.  Values arrive already validated by the library's
    models (so CiStrings are already lower-cased by it).  Each stored record keeps the library's
    view ("object") and every raw request body that wrote it ("writes")."""

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _key(module: str, object_id: Any, kwargs: dict[str, Any]) -> str:
        if module == "cdrs":
            return str(object_id)
        return f"{_value(kwargs, 'country_code')}/{_value(kwargs, 'party_id')}/{object_id}"

    @staticmethod
    def _find(module: str, object_id: Any, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        records = PEER.objects[module]
        if module == "tokens":
            token_type = kwargs.get("token_type")
            for record in records.values():
                obj = record["object"]
                if record.get("deleted"):
                    continue
                if str(obj.get("uid")) == str(object_id) and (
                    token_type is None or obj.get("type") == plain(token_type)
                ):
                    return record
            return None
        if module != "cdrs" and kwargs.get("country_code") is None:
            for record in records.values():  # lookups without owner (e.g. by id only)
                if not record.get("deleted") and str(record["object"].get("id")) == str(object_id):
                    return record
            return None
        record = records.get(MemoryCrud._key(module, object_id, kwargs))
        return None if record is None or record.get("deleted") else record

    @staticmethod
    def _write(module: str, key: str, data: dict[str, Any], action: str) -> dict[str, Any]:
        current = CURRENT_REQUEST.get()
        now = utc_now()
        record = PEER.objects[module].get(key)
        if record is None or record.get("deleted"):
            record = {"module": module, "key": key, "created_at": now, "writes": []}
            PEER.objects[module][key] = record
        record["object"] = plain(data)
        record["updated_at"] = now
        record["deleted"] = False
        record["writes"].append(
            {
                "action": action,
                "time": now,
                "request_seq": current["seq"] if current else None,
                "method": current["method"] if current else None,
                "path": current["path"] if current else None,
                "body": current["body"] if current else None,
            }
        )
        return copy.deepcopy(record["object"])

    # -- Crud interface -------------------------------------------------------------------------
    async def get(self, module: Any, role: Any, id: Any, *args: Any, **kwargs: Any) -> Any:
        module = plain(module)
        if module == "credentials":
            connection = PEER.connections.get(str(id))
            if connection is None:
                return None
            return PEER.own_credentials(str(id), plain(kwargs.get("version")) or "2.2.1")
        if module in STORE_MODULES:
            record = self._find(module, id, kwargs)
            return copy.deepcopy(record["object"]) if record else None
        return None

    async def list(
        self, module: Any, role: Any, filters: dict[str, Any], *args: Any, **kwargs: Any
    ) -> tuple[list[Any], int, bool]:
        module = plain(module)
        records = [r for r in PEER.objects.get(module, {}).values() if not r.get("deleted")]
        date_from, date_to = filters.get("date_from"), filters.get("date_to")

        def stamp(record: dict[str, Any]) -> datetime:
            text = str(record["object"].get("last_updated", "1970-01-01T00:00:00Z"))
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

        def aware(value: datetime) -> datetime:
            return value if value.tzinfo else value.replace(tzinfo=UTC)

        if date_from is not None:
            records = [r for r in records if stamp(r) >= aware(date_from)]
        if date_to is not None:
            records = [r for r in records if stamp(r) < aware(date_to)]
        records.sort(key=lambda r: r["created_at"])
        offset, limit = int(filters.get("offset") or 0), int(filters.get("limit") or 50)
        page = records[offset : offset + limit]
        return (
            [copy.deepcopy(r["object"]) for r in page],
            len(records),
            offset + limit >= len(records),
        )

    async def create(self, module: Any, role: Any, data: dict, *args: Any, **kwargs: Any) -> Any:
        module = plain(module)
        if module == "credentials":
            return self._register(data, kwargs)
        if module in STORE_MODULES:
            return self._write(module, self._key(module, data.get("id"), kwargs), data, "create")
        return data

    async def update(
        self, module: Any, role: Any, data: dict, id: Any, *args: Any, **kwargs: Any
    ) -> Any:
        module = plain(module)
        if module == "credentials":
            return self._update_registration(data, kwargs)
        if module == "commands":
            return self._command_result(str(id), data)
        if module in STORE_MODULES:
            return self._write(module, self._key(module, id, kwargs), data, "update")
        return data

    async def delete(self, module: Any, role: Any, id: Any, *args: Any, **kwargs: Any) -> None:
        module = plain(module)
        if module == "credentials":
            connection = PEER.connections.pop(str(id), None)
            if connection is not None:
                connection["deleted_at"] = utc_now()
            return
        if module in STORE_MODULES:
            record = self._find(module, id, kwargs)
            if record is not None:
                record["deleted"] = True
                current = CURRENT_REQUEST.get()
                record["writes"].append(
                    {
                        "action": "delete",
                        "time": utc_now(),
                        "request_seq": current["seq"] if current else None,
                        "method": current["method"] if current else None,
                        "path": current["path"] if current else None,
                        "body": None,
                    }
                )

    async def do(
        self, module: Any, role: Any, action: Any, *args: Any, data: Any = None, **kwargs: Any
    ) -> Any:
        module, action = plain(module), plain(action)
        if module == "tokens" and action == "AuthorizeToken" and data:
            record = self._find("tokens", data["token_uid"], {"token_type": data["token_type"]})
            if record is None:
                return None
            token = record["object"]
            return {
                "allowed": "ALLOWED" if token.get("valid") else "BLOCKED",
                "token": copy.deepcopy(token),
                "location": data.get("location_reference"),
            }
        return None

    # -- credentials (the peer is the Receiver: a CPO registers with it) -------------------------
    @staticmethod
    def _raw_credentials(fallback: dict[str, Any]) -> dict[str, Any]:
        current = CURRENT_REQUEST.get()
        body = current.get("body") if current else None
        return body if isinstance(body, dict) else plain(fallback)

    def _register(self, data: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        version = plain(kwargs.get("version")) or "2.2.1"
        token_a = kwargs.get("auth_token")
        details = data.get("endpoints") or {}
        token_c = new_token("peer-C")
        PEER.connections[token_c] = {
            "seq": PEER.next_seq(),
            "direction": "cpo_registered_with_peer",
            "version": version,
            "token_in": token_c,
            "token_out": data["credentials"]["token"],
            "token_a_used": token_a,
            "cpo_credentials": self._raw_credentials(data["credentials"]),
            "cpo_versions_url": data["credentials"]["url"],
            "endpoints": plain(details.get("endpoints") if isinstance(details, dict) else None),
            "created_at": utc_now(),
            "updated_at": utc_now(),
        }
        if token_a in PEER.tokens_a and not PEER.args.keep_token_a:
            PEER.tokens_a.remove(token_a)  # OCPI: token A is no longer valid
        return PEER.own_credentials(token_c, version)

    def _update_registration(self, data: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        version = plain(kwargs.get("version")) or "2.2.1"
        old = str(kwargs.get("auth_token"))
        connection = PEER.connections.pop(old)
        details = data.get("endpoints") or {}
        token_c = new_token("peer-C")
        connection.update(
            {
                "seq": PEER.next_seq(),
                "version": version,
                "token_in": token_c,
                "token_out": data["credentials"]["token"],
                "cpo_credentials": self._raw_credentials(data["credentials"]),
                "cpo_versions_url": data["credentials"]["url"],
                "endpoints": plain(details.get("endpoints") if isinstance(details, dict) else None),
                "updated_at": utc_now(),
                "previous_token_in": old,
            }
        )
        PEER.connections[token_c] = connection
        return PEER.own_credentials(token_c, version)

    # -- commands: CommandResult POSTed by the CPO to the response_url ---------------------------
    @staticmethod
    def _command_result(uid: str, data: dict[str, Any]) -> dict[str, Any]:
        current = CURRENT_REQUEST.get()
        entry = PEER.commands.setdefault(
            uid, {"uid": uid, "command": None, "known": False, "results": []}
        )
        entry["results"].append(
            {
                "time": utc_now(),
                "result": plain(data),
                "raw": current["body"] if current else None,
                "request_seq": current["seq"] if current else None,
            }
        )
        return data


# ================================================================================================
# Recording ASGI wrapper: records every OCPI request, routes /_control to the control app
# ================================================================================================


class Recorder:
    def __init__(self, ocpi_app: Any, control_app: Any) -> None:
        self.ocpi_app = ocpi_app
        self.control_app = control_app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.ocpi_app(scope, receive, send)
            return
        if scope["path"].startswith("/_control"):
            await self.control_app(scope, receive, send)
            return

        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            else:  # client went away before sending the body
                return
        raw = b"".join(chunks)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body, body_error = parse_json(raw)
        record: dict[str, Any] = {
            "seq": PEER.next_seq(),
            "time": utc_now(),
            "epoch": time.time(),
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": headers,
            "body": body,
            "body_error": body_error,
            "findings": request_findings(scope["method"], scope["path"], headers, body, body_error),
            "response": None,
        }
        PEER.requests.append(record)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        response: dict[str, Any] = {"status": None, "headers": {}, "chunks": []}

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                original = [
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]
                ]
                fixed = fix_headers(original, scope["path"]) if PEER.args.fix_links else original
                response["status"] = message["status"]
                response["headers"] = {k.lower(): v for k, v in fixed}
                if fixed != original:
                    response["original_headers"] = {k.lower(): v for k, v in original}
                    message = dict(message)
                    message["headers"] = [
                        (k.encode("latin-1"), v.encode("latin-1")) for k, v in fixed
                    ]
            elif message["type"] == "http.response.body":
                response["chunks"].append(message.get("body", b""))
                if not message.get("more_body"):
                    data, _ = parse_json(b"".join(response.pop("chunks")))
                    response["body"] = data
                    record["response"] = response
            await send(message)

        token = CURRENT_REQUEST.set(record)
        try:
            await self.ocpi_app(scope, replay, capture)
        finally:
            CURRENT_REQUEST.reset(token)


ENUM_IN_URL = re.compile(r"VersionNumber\.v_(\d+)_(\d+)(?:_(\d+))?")
NONE_PARAM = re.compile(r"(?<=[?&])(date_from|date_to)=None(&|(?=>))")


def fix_url_text(value: str, path: str) -> str:
    host = f"{PEER.host}:{PEER.port}"
    if not PEER.args.ssl_certfile:  # (a plain-HTTP peer: the library writes https anyway)
        value = value.replace(f"https://{host}/", f"http://{host}/")
    if path.startswith(f"/{OCPI_PREFIX}/emsp/"):
        value = value.replace(f"/{OCPI_PREFIX}/cpo/", f"/{OCPI_PREFIX}/emsp/")
    # Python >= 3.11 formats the library's str-Enums as "VersionNumber.v_2_2_1"/"ModuleID.cdrs"
    value = ENUM_IN_URL.sub(lambda m: ".".join(g for g in m.groups() if g is not None), value)
    value = value.replace("ModuleID.", "")
    value = NONE_PARAM.sub("", value)
    return value.replace("?>", ">").replace("&>", ">")


def fix_headers(headers: list[tuple[str, str]], path: str) -> list[tuple[str, str]]:
    """--fix-links: the library's Link and Location URLs cannot be followed as sent (https on a
    plain-HTTP peer, /ocpi/cpo/ for eMSP routes, enum reprs instead of values, date_to=None);
    repair them.  An empty Link header (sent on the last page) is dropped."""
    fixed: list[tuple[str, str]] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in ("link", "location"):
            if lowered == "link" and not value.strip():
                continue
            value = fix_url_text(value, path)
        fixed.append((name, value))
    return fixed


def install_outgoing_recorder() -> None:
    """Record every request made with httpx -- ours and the library's own (credentials
    call-backs, push client)."""
    original_send = httpx.AsyncClient.send

    async def recording_send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any):
        body, _ = parse_json(request.content if not kwargs.get("stream") else b"")
        entry: dict[str, Any] = {
            "seq": PEER.next_seq(),
            "time": utc_now(),
            "origin": ORIGIN.get(),
            "method": request.method,
            "url": str(request.url),
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body,
            "response": None,
            "error": None,
        }
        PEER.outgoing.append(entry)
        try:
            response = await original_send(self, request, **kwargs)
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            raise
        data = None
        if not kwargs.get("stream"):
            data, _ = parse_json(response.content)
        entry["response"] = {
            "status": response.status_code,
            "headers": {k.lower(): v for k, v in response.headers.items()},
            "body": data,
        }
        return response

    httpx.AsyncClient.send = recording_send  # type: ignore[method-assign]


# ================================================================================================
# Control API (our own code: the peer acting as a client of the CPO)
# ================================================================================================


def library_model(class_name: str, module: str, version: str) -> Any:
    from py_ocpi.core.utils import get_module_model

    version_name = "v_2_1_1" if version.startswith("2.1") else "v_2_2_1"
    return get_module_model(class_name=class_name, module_name=module, version_name=version_name)


def validate(model: Any, data: Any) -> list[dict[str, Any]]:
    """Validate with a library (pydantic 1) model; [] when it accepts."""
    from pydantic import ValidationError

    try:
        model.parse_obj(data)
    except ValidationError as exc:
        return plain(exc.errors())
    except (TypeError, ValueError, AttributeError) as exc:  # library validators leak these
        return [{"loc": [], "msg": f"{type(exc).__name__}: {exc}", "type": "exception"}]
    return []


def need_connection(body: dict[str, Any]) -> dict[str, Any]:
    connection = PEER.current_connection()
    if body.get("connection"):
        connection = PEER.connections.get(body["connection"])
    if connection is None:
        raise ControlError(409, "no registration with a CPO yet (register first)")
    return connection


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def control_register(body: dict[str, Any]) -> dict[str, Any]:
    """The peer as credentials SENDER: GET versions, GET details, POST credentials (token A)."""
    versions_url = body["versions_url"]
    token_a = body["token_a"]
    wanted = body.get("version")
    auth = body.get("auth", "auto")
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {"ok": False, "error": None, "steps": steps, "validation": {}}
    probe_version = wanted or "2.2.1"

    exchange = await PEER.call(
        "GET", versions_url, token=token_a, version=probe_version, auth=auth, origin="register"
    )
    steps.append(exchange)
    if not envelope_ok(exchange):
        result["error"] = "GET versions failed"
        return result
    versions = exchange["response"]["json"].get("data")
    if not isinstance(versions, list):
        result["error"] = "versions data is not a list"
        return result
    from py_ocpi.modules.versions.schemas import Version

    result["validation"]["versions"] = [validate(Version, v) for v in versions]
    offered = {str(v.get("version")): v.get("url") for v in versions if isinstance(v, dict)}
    if wanted:
        version = wanted if wanted in offered else None
    else:
        version = next((v for v in PEER.versions if v in offered), None)
    if version is None:
        result["error"] = f"no mutual version (offered {sorted(offered)}, peer {PEER.versions})"
        return result
    result["version"] = version

    exchange = await PEER.call(
        "GET", offered[version], token=token_a, version=version, auth=auth, origin="register"
    )
    steps.append(exchange)
    if not envelope_ok(exchange):
        result["error"] = "GET version details failed"
        return result
    details = exchange["response"]["json"].get("data") or {}
    if version.startswith("2.2"):
        from py_ocpi.modules.versions.v_2_2_1.schemas import VersionDetail

        result["validation"]["details"] = validate(VersionDetail, details)
    endpoints = details.get("endpoints") if isinstance(details, dict) else None
    credentials_url = find_endpoint(endpoints or [], "credentials", None)
    result["endpoints"] = endpoints
    if not credentials_url:
        result["error"] = "CPO advertises no credentials endpoint"
        return result

    token_b = body.get("token_b") or new_token("peer-B")
    ours = PEER.own_credentials(token_b, version)
    result["validation"]["own_credentials"] = validate(
        library_model("Credentials", "credentials", version), ours
    )
    PEER.pending_tokens.append(token_b)  # the CPO calls us back with it before answering
    try:
        exchange = await PEER.call(
            "POST",
            credentials_url,
            token=token_a,
            version=version,
            auth=auth,
            json_body=ours,
            origin="register",
        )
    finally:
        PEER.pending_tokens.remove(token_b)
    steps.append(exchange)
    result["token_b"] = token_b
    if not envelope_ok(exchange):
        result["error"] = "POST credentials failed"
        return result
    answer = exchange["response"]["json"].get("data")
    result["cpo_credentials"] = answer
    result["validation"]["cpo_credentials"] = validate(
        library_model("Credentials", "credentials", version), answer
    )
    if not isinstance(answer, dict) or not isinstance(answer.get("token"), str):
        result["error"] = "credentials answer has no token"
        return result
    result["token_c"] = answer["token"]
    PEER.connections[token_b] = {
        "seq": PEER.next_seq(),
        "direction": "peer_registered_with_cpo",
        "version": version,
        "token_in": token_b,
        "token_out": answer["token"],
        "cpo_credentials": answer,
        "cpo_versions_url": versions_url,
        "cpo_details_url": offered[version],
        "endpoints": endpoints,
        "created_at": utc_now(),
        "updated_at": utc_now(),
    }
    result["ok"] = True
    return result


async def control_pull(body: dict[str, Any]) -> dict[str, Any]:
    """GET a Sender module of the CPO, following Link rel="next" until the last page."""
    connection = need_connection(body)
    module = body["module"]
    version = connection["version"]
    url = body.get("url") or find_endpoint(connection["endpoints"], module, "SENDER")
    if not url:
        raise ControlError(409, f"CPO advertises no {module} SENDER endpoint")
    max_pages = int(body.get("max_pages", 100))
    params = body.get("params") or {}
    result: dict[str, Any] = {
        "ok": False,
        "error": None,
        "url": url,
        "pages": [],
        "objects": [],
        "validation_errors": [],
        "findings": [],
    }
    model = None
    if body.get("validate", True) and module in MODEL_BY_MODULE:
        model = library_model(*MODEL_BY_MODULE[module], version)
    next_url: str | None = url
    next_params: dict[str, Any] | None = params
    while next_url:
        if len(result["pages"]) >= max_pages:
            result["error"] = f"stopped after max_pages={max_pages}"
            return result
        exchange = await PEER.call(
            "GET",
            next_url,
            token=body.get("token") or connection["token_out"],
            version=version,
            params=next_params,
            module=module,
            connection=connection,
            auth=body.get("auth", "auto"),
            headers=body.get("headers"),
            origin="pull",
        )
        page_index = len(result["pages"])
        result["pages"].append(exchange)
        if not envelope_ok(exchange):
            result["error"] = f"page {page_index} failed"
            return result
        response = exchange["response"]
        data = response["json"].get("data")
        if not isinstance(data, list):
            result["error"] = f"page {page_index}: data is not a list"
            return result
        for index, obj in enumerate(data):
            result["objects"].append(obj)
            if model is not None:
                errors = validate(model, obj)
                if errors:
                    result["validation_errors"].append(
                        {
                            "page": page_index,
                            "index": index,
                            "id": obj.get("id") if isinstance(obj, dict) else None,
                            "errors": errors,
                        }
                    )
        for name in ("x-total-count", "x-limit"):
            if name not in response["headers"]:
                exchange["findings"].append(f"paginated response without {name}")
        link = response["headers"].get("link", "")
        match = LINK_NEXT.search(link)
        next_url = match.group(1) if match else None
        next_params = None  # the Link URL carries the filters
        if next_url and not urlsplit(next_url).scheme:
            exchange["findings"].append(f"Link URL is not absolute: {next_url}")
    result["ok"] = True
    result["findings"] = [f for page in result["pages"] for f in page["findings"]]
    return result


async def control_call(body: dict[str, Any]) -> dict[str, Any]:
    """A raw OCPI request to the CPO: {method, module|url, path, params, json, headers, ...}."""
    connection = PEER.current_connection()
    if body.get("connection"):
        connection = PEER.connections.get(body["connection"])
    module = body.get("module")
    url = body.get("url")
    if url is None:
        if connection is None or module is None:
            raise ControlError(409, "give a url, or register first and give a module")
        base = find_endpoint(connection["endpoints"], module, body.get("role"))
        if base is None:
            raise ControlError(409, f"CPO advertises no {module} endpoint")
        url = join_url(base, body.get("path", ""))
    token = body.get("token")
    if token is None and connection is not None and not body.get("no_token"):
        token = connection["token_out"]
    return await PEER.call(
        body.get("method", "GET").upper(),
        url,
        token=token,
        version=body.get("version") or (connection or {}).get("version", "2.2.1"),
        json_body=body.get("json"),
        params=body.get("params"),
        module=module,
        connection=connection,
        auth=body.get("auth", "auto"),
        headers=body.get("headers"),
        routing=body.get("routing"),
        origin="call",
    )


async def control_push_token(body: dict[str, Any]) -> dict[str, Any]:
    """PUT (full) or PATCH (partial) a Token to the CPO's tokens RECEIVER endpoint."""
    connection = need_connection(body)
    version = connection["version"]
    token = body["token"]
    method = body.get("method", "PUT").upper()
    if body.get("via") == "library":
        return await push_token_with_library(connection, token)
    uid = body.get("uid") or token.get("uid")
    country_code = body.get("country_code") or token.get("country_code") or PEER.country_code
    party_id = body.get("party_id") or token.get("party_id") or PEER.party_id
    token_type = body["type"] if "type" in body else token.get("type")
    base = find_endpoint(connection["endpoints"], "tokens", "RECEIVER")
    if base is None:
        raise ControlError(409, "CPO advertises no tokens RECEIVER endpoint")
    if body.get("validate", True):
        model_name = "Token" if method == "PUT" else "TokenPartialUpdate"
        errors = validate(library_model(model_name, "tokens", version), token)
        if errors:
            return {"ok": False, "error": "token rejected by the library model", "errors": errors}
    exchange = await PEER.call(
        method,
        join_url(base, country_code, party_id, uid),
        token=connection["token_out"],
        version=version,
        json_body=token,
        params={"type": token_type} if token_type else None,
        module="tokens",
        connection=connection,
        auth=body.get("auth", "auto"),
        headers=body.get("headers"),
        origin="push_token",
    )
    exchange["ok"] = envelope_ok(exchange)
    if exchange["ok"]:
        remember_own_token(token, method)
    return exchange


def token_key(parsed: dict[str, Any]) -> str:
    return f"{parsed['country_code']}/{parsed['party_id']}/{parsed['uid']}/{parsed['type']}"


def remember_own_token(token: dict[str, Any], method: str) -> None:
    """Tokens the peer pushed are tokens it owns: keep them for the tokens Sender GET."""
    model = library_model("Token", "tokens", "2.2.1")
    if method == "PATCH":
        uid = str(token.get("uid", "")).lower()
        for key, record in PEER.objects["tokens"].items():
            if record["object"].get("uid") == uid and not record.get("deleted"):
                merged = {**record["object"], **token}
                if not validate(model, merged):
                    MemoryCrud._write("tokens", key, plain(model.parse_obj(merged).dict()), "patch")
                return
    elif not validate(model, token):
        parsed = plain(model.parse_obj(token).dict())
        MemoryCrud._write("tokens", token_key(parsed), parsed, "put")


async def push_token_with_library(connection: dict[str, Any], token: dict[str, Any]) -> dict:
    """The library's own push client (py_ocpi.core.push.push_object): GETs the CPO's version
    details with the token, then PUTs {tokens_url}{COUNTRY_CODE}/{PARTY_ID}/{uid}."""
    from py_ocpi.core.adapter import BaseAdapter
    from py_ocpi.core.push import push_object
    from py_ocpi.core.schemas import Push, Receiver
    from py_ocpi.modules.versions.enums import VersionNumber

    remember_own_token(token, "PUT")
    details_url = connection.get("cpo_details_url")
    if not details_url:
        exchange = await PEER.call(
            "GET",
            connection["cpo_versions_url"],
            token=connection["token_out"],
            version=connection["version"],
            origin="push_token",
        )
        versions = ((exchange.get("response") or {}).get("json") or {}).get("data") or []
        details_url = next(
            (v["url"] for v in versions if v.get("version") == connection["version"]), None
        )
        if not details_url:
            return {"ok": False, "error": "could not find the CPO version details URL"}
    push = Push(
        module_id="tokens",
        object_id=str(token["uid"]).lower(),
        receivers=[Receiver(endpoints_url=details_url, auth_token=connection["token_out"])],
    )
    first = len(PEER.outgoing)
    token_origin = ORIGIN.set("library_push")
    try:
        answer = await push_object(
            VersionNumber(connection["version"]), push, MemoryCrud(), BaseAdapter
        )
    except Exception as exc:
        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "outgoing": PEER.outgoing[first:],
        }
    finally:
        ORIGIN.reset(token_origin)
    answers = plain(answer.dict())["receiver_responses"]
    ok = bool(answers) and all(
        200 <= a["status_code"] < 300 and (a.get("response") or {}).get("status_code") == 1000
        for a in answers
    )
    return {"ok": ok, "library_answer": answers, "outgoing": PEER.outgoing[first:]}


async def control_send_command(body: dict[str, Any]) -> dict[str, Any]:
    """POST {commands_url}/{COMMAND} with a response_url that points back to this peer."""
    connection = need_connection(body)
    version = connection["version"]
    command = body["command"].upper()
    payload = dict(body.get("body") or {})
    uid = uuid.uuid4().hex
    response_url = f"{PEER.base_url}/{OCPI_PREFIX}/emsp/{version}/commands/{uid}"
    payload.setdefault("response_url", response_url)
    if body.get("validate", True) and command in COMMAND_MODELS:
        errors = validate(library_model(COMMAND_MODELS[command], "commands", version), payload)
        if errors:
            return {"ok": False, "error": "command rejected by the library model", "errors": errors}
    base = find_endpoint(connection["endpoints"], "commands", "RECEIVER")
    if base is None:
        raise ControlError(409, "CPO advertises no commands RECEIVER endpoint")
    entry = PEER.commands.setdefault(uid, {"uid": uid, "results": []})
    entry.update(
        {
            "command": command,
            "known": True,
            "response_url": payload["response_url"],
            "sent": payload,
        }
    )
    exchange = await PEER.call(
        "POST",
        join_url(base, command),
        token=connection["token_out"],
        version=version,
        json_body=payload,
        module="commands",
        connection=connection,
        auth=body.get("auth", "auto"),
        headers=body.get("headers"),
        origin="command",
    )
    entry["exchange"] = exchange
    data = ((exchange.get("response") or {}).get("json") or {}).get("data")
    entry["command_response"] = data
    if isinstance(data, dict):
        entry["validation"] = validate(library_model("CommandResponse", "commands", version), data)
    return {
        "ok": envelope_ok(exchange),
        "uid": uid,
        "response_url": payload["response_url"],
        "command_response": data,
        "validation": entry.get("validation"),
        "exchange": exchange,
    }


async def control_credentials(action: str, body: dict[str, Any]) -> dict[str, Any]:
    """GET / PUT (renew) / DELETE (unregister) on the CPO's credentials endpoint."""
    connection = need_connection(body)
    version = connection["version"]
    url = find_endpoint(connection["endpoints"], "credentials", None)
    if url is None:
        raise ControlError(409, "CPO advertises no credentials endpoint")
    common = {
        "token": body.get("token") or connection["token_out"],
        "version": version,
        "auth": body.get("auth", "auto"),
        "headers": body.get("headers"),
        "origin": f"credentials_{action}",
    }
    if action == "get":
        exchange = await PEER.call("GET", url, **common)
        exchange["ok"] = envelope_ok(exchange)
        return exchange
    if action == "delete":
        exchange = await PEER.call("DELETE", url, **common)
        exchange["ok"] = envelope_ok(exchange)
        if exchange["ok"]:
            PEER.connections.pop(connection["token_in"], None)
        return exchange
    new_b = body.get("token_b") or new_token("peer-B")
    PEER.pending_tokens.append(new_b)
    try:
        credentials = PEER.own_credentials(new_b, version)
        if body.get("roles"):  # a test may claim other roles (e.g. more than it was granted)
            credentials["roles"] = body["roles"]
        exchange = await PEER.call("PUT", url, json_body=credentials, **common)
    finally:
        PEER.pending_tokens.remove(new_b)
    exchange["ok"] = envelope_ok(exchange)
    answer = ((exchange.get("response") or {}).get("json") or {}).get("data")
    if exchange["ok"] and isinstance(answer, dict) and isinstance(answer.get("token"), str):
        PEER.connections.pop(connection["token_in"], None)
        connection.update(
            {
                "seq": PEER.next_seq(),
                "previous_token_in": connection["token_in"],
                "token_in": new_b,
                "token_out": answer["token"],
                "cpo_credentials": answer,
                "updated_at": utc_now(),
            }
        )
        PEER.connections[new_b] = connection
        exchange["token_b"] = new_b
        exchange["token_c"] = answer["token"]
    else:
        exchange["ok"] = False
    return exchange


def seed_tokens(body: dict[str, Any]) -> dict[str, Any]:
    model = library_model("Token", "tokens", "2.2.1")
    stored, rejected = [], []
    for index, token in enumerate(body.get("tokens") or []):
        errors = validate(model, token)
        if errors:
            rejected.append({"index": index, "errors": errors})
            continue
        parsed = plain(model.parse_obj(token).dict())
        stored.append(MemoryCrud._write("tokens", token_key(parsed), parsed, "seed"))
    return {"stored": stored, "rejected": rejected}


def build_control_app() -> FastAPI:
    control = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    async def read_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ControlError(400, "control body must be a JSON object")
        return data

    def answer(data: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(plain(data), status_code=status)

    def info() -> dict[str, Any]:
        return {
            "event": "ready",
            "pid": os.getpid(),
            "host": PEER.host,
            "port": PEER.port,
            "base_url": PEER.base_url,
            "versions_url": PEER.versions_url,
            "details_urls": PEER.details_urls,
            "versions": PEER.versions,
            "control_url": f"{PEER.base_url}/_control",
            "token_a": PEER.tokens_a[0] if PEER.tokens_a else None,
            "country_code": PEER.country_code,
            "party_id": PEER.party_id,
            "role": PEER.role,
            "fix_links": PEER.args.fix_links,
            "library": library_version(),
        }

    @control.exception_handler(ControlError)
    async def control_error(request: Request, exc: ControlError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @control.exception_handler(KeyError)
    async def missing_field(request: Request, exc: KeyError) -> JSONResponse:
        return JSONResponse({"error": f"missing field {exc}"}, status_code=400)

    @control.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"error": f"bad request: {exc}"}, status_code=400)

    @control.get("/_control/info")
    async def get_info() -> JSONResponse:
        return answer(info())

    @control.get("/_control/state")
    async def get_state() -> JSONResponse:
        return answer(PEER.state())

    @control.get("/_control/requests")
    async def get_requests(request: Request) -> JSONResponse:
        since = int(request.query_params.get("since", 0))
        method = request.query_params.get("method")
        path = request.query_params.get("path")
        found = [
            r
            for r in PEER.requests
            if r["seq"] > since
            and (method is None or r["method"] == method.upper())
            and (path is None or path in r["path"])
        ]
        return answer({"requests": found, "last_seq": PEER.seq})

    @control.delete("/_control/requests")
    async def clear_requests() -> JSONResponse:
        PEER.requests.clear()
        return answer({"cleared": True})

    @control.get("/_control/outgoing")
    async def get_outgoing(request: Request) -> JSONResponse:
        since = int(request.query_params.get("since", 0))
        return answer({"outgoing": [o for o in PEER.outgoing if o["seq"] > since]})

    @control.delete("/_control/outgoing")
    async def clear_outgoing() -> JSONResponse:
        PEER.outgoing.clear()
        return answer({"cleared": True})

    @control.get("/_control/objects/{module}")
    async def get_objects(module: str, request: Request) -> JSONResponse:
        if module not in PEER.objects:
            raise ControlError(404, f"unknown module {module}; one of {sorted(PEER.objects)}")
        deleted = request.query_params.get("deleted") == "1"
        records = [r for r in PEER.objects[module].values() if deleted or not r.get("deleted")]
        return answer({"objects": records})

    @control.post("/_control/token-a")
    async def add_token_a(request: Request) -> JSONResponse:
        body = await read_body(request)
        token = body.get("token") or new_token("peer-A")
        PEER.tokens_a.append(token)
        return answer({"token": token, "tokens_a": PEER.tokens_a})

    @control.post("/_control/tokens")
    async def post_tokens(request: Request) -> JSONResponse:
        return answer(seed_tokens(await read_body(request)))

    @control.post("/_control/register")
    async def register(request: Request) -> JSONResponse:
        return answer(await control_register(await read_body(request)))

    @control.post("/_control/pull")
    async def pull(request: Request) -> JSONResponse:
        return answer(await control_pull(await read_body(request)))

    @control.post("/_control/call")
    async def call(request: Request) -> JSONResponse:
        return answer(await control_call(await read_body(request)))

    @control.post("/_control/push-token")
    async def push_token(request: Request) -> JSONResponse:
        return answer(await control_push_token(await read_body(request)))

    @control.post("/_control/commands")
    async def send_command(request: Request) -> JSONResponse:
        return answer(await control_send_command(await read_body(request)))

    @control.get("/_control/commands")
    async def get_commands() -> JSONResponse:
        return answer({"commands": list(PEER.commands.values())})

    @control.get("/_control/commands/{uid}")
    async def get_command(uid: str) -> JSONResponse:
        if uid not in PEER.commands:
            raise ControlError(404, f"no command {uid}")
        return answer(PEER.commands[uid])

    @control.post("/_control/credentials/{action}")
    async def credentials(action: str, request: Request) -> JSONResponse:
        if action not in ("get", "renew", "delete"):
            raise ControlError(404, "action is one of get, renew, delete")
        return answer(await control_credentials(action, await read_body(request)))

    add_authorize_control(control, read_body)  # (steered real-time authorization, below)
    return control


# ================================================================================================
# Steered real-time authorization (issue 19): POST _control/authorize sets, per token uid, how
# the peer answers POST tokens/{uid}/authorize (any version): after `delay_s`, an
# AuthorizationInfo with `allowed` (any text: hostile answers too), or a raw answer
# (`http_status`, `raw` text, `envelope` JSON, `huge_kb` of filler); without either, the
# library answers (after the delay). Every request is still recorded.
# ================================================================================================

AUTHORIZE_PATH = re.compile(r"/tokens/([^/]+)/authorize/?$")
AUTHORIZE_RULES: dict[str, dict[str, Any]] = {}  # uid (lower case) -> rule
AUTHORIZE_RULE_KEYS = {
    "allowed",
    "delay_s",
    "http_status",
    "raw",
    "envelope",
    "huge_kb",
    "token",
    "location",
    "authorization_reference",
}


def set_authorize_rules(body: dict[str, Any]) -> dict[str, Any]:
    """``{uid: rule or null}``: set (or, with null, remove) the rule of each uid."""
    for uid, rule in body.items():
        if rule is None:
            AUTHORIZE_RULES.pop(uid.lower(), None)
            continue
        if not isinstance(rule, dict) or set(rule) - AUTHORIZE_RULE_KEYS:
            keys = sorted(AUTHORIZE_RULE_KEYS)
            raise ControlError(400, f"rule of {uid!r}: an object with some of {keys}")
        delay = rule.get("delay_s", 0)
        if not isinstance(delay, int | float) or not 0 <= delay <= 60:
            raise ControlError(400, f"rule of {uid!r}: delay_s is 0..60")
        AUTHORIZE_RULES[uid.lower()] = dict(rule)
    return {"rules": AUTHORIZE_RULES}


def steered_authorization(uid: str, rule: dict[str, Any], body: Any) -> dict[str, Any]:
    """The AuthorizationInfo of a rule with ``allowed``: the peer's own token of that uid
    (or one made up with the peer's party), the LocationReferences asked (or the rule's)."""
    token = next(
        (
            copy.deepcopy(r["object"])
            for r in PEER.objects["tokens"].values()
            if str(r["object"].get("uid", "")).lower() == uid and not r.get("deleted")
        ),
        None,
    ) or {
        "country_code": PEER.country_code,
        "party_id": PEER.party_id,
        "uid": uid,
        "type": "RFID",
        "contract_id": f"{PEER.country_code}-{PEER.party_id}-C-{uid}"[:36],
        "issuer": PEER.args.name or "OCPI test peer",
        "valid": True,
        "whitelist": "ALLOWED",
        "last_updated": utc_now(),
    }
    token.update(rule.get("token") or {})
    info: dict[str, Any] = {"allowed": rule["allowed"], "token": token}
    location = rule.get("location", body if isinstance(body, dict) else None)
    if location is not None:
        info["location"] = location
    if rule.get("authorization_reference") is not None:
        info["authorization_reference"] = rule["authorization_reference"]
    return info


class AuthorizeSteering:
    """ASGI: answers POST .../tokens/{uid}/authorize as its rule says (see above)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        match = AUTHORIZE_PATH.search(scope.get("path", "")) if scope["type"] == "http" else None
        rule = AUTHORIZE_RULES.get(match.group(1).lower()) if match else None
        if rule is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        await asyncio.sleep(float(rule.get("delay_s", 0)))
        if "allowed" in rule:
            current = CURRENT_REQUEST.get()
            asked = current.get("body") if current else None
            info = steered_authorization(match.group(1).lower(), rule, asked)
            payload = json.dumps(
                {"data": info, "status_code": 1000, "timestamp": utc_now()}
            ).encode()
        elif "envelope" in rule:
            payload = json.dumps(rule["envelope"]).encode()
        elif "huge_kb" in rule:
            payload = b"x" * (1024 * int(rule["huge_kb"]))
        elif "raw" in rule or "http_status" in rule:
            payload = str(rule.get("raw", "")).encode()
        else:
            await self.app(scope, receive, send)
            return
        kind = b"application/json" if "allowed" in rule or "envelope" in rule else b"text/plain"
        length = str(len(payload)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": int(rule.get("http_status", 200)),
                "headers": [(b"content-type", kind), (b"content-length", length)],
            }
        )
        await send({"type": "http.response.body", "body": payload, "more_body": False})


def add_authorize_control(control: FastAPI, read_body: Any) -> None:
    @control.post("/_control/authorize")
    async def post_authorize(request: Request) -> JSONResponse:
        return JSONResponse(set_authorize_rules(await read_body(request)))

    @control.get("/_control/authorize")
    async def get_authorize() -> JSONResponse:
        return JSONResponse({"rules": AUTHORIZE_RULES})

    @control.delete("/_control/authorize")
    async def clear_authorize() -> JSONResponse:
        AUTHORIZE_RULES.clear()
        return JSONResponse({"rules": AUTHORIZE_RULES})


def library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("extrawest-ocpi")
    except PackageNotFoundError:
        return "unknown"


# ================================================================================================
# main
# ================================================================================================


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--party-id", default="EMS")
    parser.add_argument("--country-code", default="PT")
    parser.add_argument("--role", default="EMSP", help="role in its credentials (EMSP, HUB...)")
    parser.add_argument("--name", default="Test eMSP peer (extrawest-ocpi)")
    parser.add_argument("--token-a", default=None, help="credentials token A (default: random)")
    parser.add_argument(
        "--keep-token-a",
        action="store_true",
        help="keep token A valid after a registration (OCPI says it becomes invalid)",
    )
    parser.add_argument(
        "--versions", default="2.2.1", help="comma list of 2.2.1 and/or 2.1.1 (library limits)"
    )
    parser.add_argument(
        "--fix-links",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rewrite the library's https://.../ocpi/cpo/ Link and Location headers so that "
        "they can be followed (originals stay in the request log)",
    )
    parser.add_argument(
        "--cistring-case",
        choices=("lower", "upper"),
        default="lower",
        help="the library rewrites every CiString to this case (its default: lower)",
    )
    parser.add_argument("--http-timeout", type=float, default=10.0)
    # https: serve TLS with this certificate chain and key (uvicorn's own options); the peer's
    # own calls trust the CA given in the SSL_CERT_FILE environment variable (httpx)
    parser.add_argument("--ssl-certfile", default=None)
    parser.add_argument("--ssl-keyfile", default=None)
    parser.add_argument("--debug", action="store_true", help="library log level DEBUG")
    args = parser.parse_args(argv)
    args.token_a = args.token_a or new_token("peer-A")
    return args


def configure_library_environment(args: argparse.Namespace, port: int) -> None:
    """py_ocpi's pydantic BaseSettings reads these (and a .env file in the cwd) at import time;
    set every one so that neither the caller's environment nor a stray .env changes the peer."""
    os.environ.update(
        {
            "ENVIRONMENT": "development" if args.debug else "production",
            "NO_AUTH": "false",
            "PROJECT_NAME": "OCPI test eMSP peer",
            "BACKEND_CORS_ORIGINS": "[]",
            "OCPI_HOST": f"{args.host}:{port}",
            "OCPI_PREFIX": OCPI_PREFIX,
            "PUSH_PREFIX": "push",
            "COUNTRY_CODE": args.country_code,
            "PARTY_ID": args.party_id,
            "PROTOCOL": "https" if args.ssl_certfile else "http",
            "COMMAND_AWAIT_TIME": "5",
            "GET_ACTIVE_PROFILE_AWAIT_TIME": "5",
            "TRAILING_SLASH": "true",
            "CI_STRING_LOWERCASE_PREFERENCE": "true" if args.cistring_case == "lower" else "false",
        }
    )


async def serve(sock: socket.socket, ready: dict[str, Any]) -> None:
    app = Recorder(AuthorizeSteering(build_app()), build_control_app())
    config = uvicorn.Config(
        app,
        log_level="debug" if PEER.args.debug else "warning",
        access_log=False,
        lifespan="off",
        ssl_certfile=PEER.args.ssl_certfile,
        ssl_keyfile=PEER.args.ssl_keyfile,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            raise SystemExit("the peer server did not start")
        await asyncio.sleep(0.02)
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    try:
        await task
    finally:
        if PEER.client is not None:
            await PEER.client.aclose()


def main(argv: list[str] | None = None) -> None:
    global PEER
    args = parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    configure_library_environment(args, port)
    PEER = Peer(args, port)
    install_outgoing_recorder()
    ready = {
        "event": "ready",
        "pid": os.getpid(),
        "port": port,
        "base_url": PEER.base_url,
        "versions_url": PEER.versions_url,
        "details_urls": PEER.details_urls,
        "control_url": f"{PEER.base_url}/_control",
        "token_a": args.token_a,
        "country_code": args.country_code,
        "party_id": args.party_id,
        "role": args.role,
        "versions": PEER.versions,
        "library": library_version(),
    }
    asyncio.run(serve(sock, ready))


if __name__ == "__main__":
    main()
