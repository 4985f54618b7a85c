"""The operator API's contract: OpenAPI 3.1, derived from the routes the server really has.

Each ``/api/v1`` handler carries its description (:func:`operation`, next to the code that
answers); :func:`build_spec` walks the application's router and writes one operation per
route, so the contract can neither list a route that does not exist nor forget one without
:func:`undocumented` naming it (``tests/test_openapi.py`` fails on any, and checks every
answer against the contract with schemathesis). Served, without credentials (it holds no
data), at ``/api/v1/openapi.json``, and as a page at ``/api/v1/docs``.

Every operation also gets the answers every route can give: 401 (no or wrong credentials),
429 (too many wrong passwords), 400 for bad query parameters, 404 for an unknown object in
the path, and 400/413/422 for a bad body.
"""

from __future__ import annotations

import html
import importlib.metadata
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

F = TypeVar("F", bound=Callable[..., Any])

PREFIX = "/api/v1"
SPEC_PATH = f"{PREFIX}/openapi.json"
DOCS_PATH = f"{PREFIX}/docs"
PUBLIC_PATHS = frozenset({SPEC_PATH, DOCS_PATH})

# ---------------------------------------------------------------------- schema shorthands

STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
NUM: dict[str, Any] = {"type": "number"}
BOOL: dict[str, Any] = {"type": "boolean"}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
ANY: dict[str, Any] = {}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null (JSON Schema 2020-12, as OpenAPI 3.1 uses it)."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    out = dict(schema)
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    elif kind is None:
        return {"anyOf": [schema, {"type": "null"}]} if schema else {}
    return out


def obj(
    props: dict[str, dict[str, Any]] | None = None,
    *,
    optional: Iterable[str] = (),
    extra: bool = True,
    description: str | None = None,
) -> dict[str, Any]:
    """An object whose ``props`` are all present (but those named ``optional``)."""
    props = props or {}
    skip = set(optional)
    out: dict[str, Any] = {"type": "object", "properties": props}
    required = [k for k in props if k not in skip]
    if required:
        out["required"] = required
    if not extra:
        out["additionalProperties"] = False
    if description:
        out["description"] = description
    return out


def array(items: dict[str, Any], *, max_items: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "array", "items": items}
    if max_items is not None:
        out["maxItems"] = max_items
    return out


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def page_of(item: dict[str, Any], **more: dict[str, Any]) -> dict[str, Any]:
    """The API's list answer: ``{"items", "total", "limit", "offset"}`` (and ``more``)."""
    return obj({"items": array(item), "total": INT, "limit": INT, "offset": INT, **more})


def list_of(item: dict[str, Any], **more: dict[str, Any]) -> dict[str, Any]:
    """A short, whole list: ``{"items", "total"}`` (and ``more``)."""
    return obj({"items": array(item), "total": INT, **more})


# ---------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any] = field(default_factory=lambda: dict(STR))
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Answer:
    """One documented answer: JSON with ``schema``, ``media`` other than JSON (CSV, a
    file), or no body at all (``empty``)."""

    description: str
    schema: dict[str, Any] | None = None
    media: str = "application/json"
    empty: bool = False


def ok(description: str, schema: dict[str, Any] | None = None) -> Answer:
    return Answer(description, schema if schema is not None else obj())


def fails(description: str) -> Answer:
    return Answer(description, ref("Error"))


def file_answer(description: str, media: str = "application/octet-stream") -> Answer:
    return Answer(description, {"type": "string"}, media=media)


NO_CONTENT = Answer("done, nothing to say", empty=True)

PAGING = (
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (default 100)"),
    Param("offset", {"type": "integer", "minimum": 0, "maximum": 1_000_000_000}, "to skip"),
)

DAY_OR_TIME: dict[str, Any] = {
    "type": "string",
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}",
    "description": "YYYY-MM-DD, or an ISO 8601 date-time",
}
EXPORT_NOTE = (
    "from/to: dates (YYYY-MM-DD) or times in the operator's time zone (web.time_zone), "
    "[from, to) at most 366 days apart"
)
EXPORT_QUERY = (
    Param("from", DAY_OR_TIME, "first day or time (operator's time zone)", required=True),
    Param("to", DAY_OR_TIME, "day or time after the last (excluded)", required=True),
    Param("station", description="one station's only"),
    Param("token", description="one id tag or token uid only"),
    Param("format", {"type": "string", "enum": ["csv", "excel-pt"]}),
    Param("sep", {"type": "string", "enum": [",", ";"]}),
    Param("decimal", {"type": "string", "enum": ["dot", "comma"]}),
    Param("bom", {"type": "string", "enum": ["true", "false", "1", "0"]}),
)


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    responses: dict[int, Answer]
    description: str = ""
    query: tuple[Param, ...] = ()
    path: dict[str, dict[str, Any]] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    body_required: bool = True
    body_media: str = "application/json"


def operation(
    summary: str,
    *,
    tag: str,
    responses: dict[int, Answer],
    description: str = "",
    query: Iterable[Param] = (),
    path: dict[str, dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    body_media: str = "application/json",
) -> Callable[[F], F]:
    """Describe the ``/api/v1`` handler it decorates (see :func:`build_spec`). ``path``
    gives the schema of path parameters that are not plain strings."""
    op = Operation(
        summary,
        tag,
        dict(responses),
        description,
        tuple(query),
        dict(path or {}),
        body,
        body_required,
        body_media,
    )

    def mark(fn: F) -> F:
        fn.__openapi__ = op  # type: ignore[attr-defined]
        return fn

    return mark


def operation_of(handler: Any) -> Operation | None:
    op = getattr(handler, "__openapi__", None)
    return op if isinstance(op, Operation) else None


# ---------------------------------------------------------------------- shared schemas

ERROR = obj(
    {
        "status": {"const": "error"},
        "error": STR,
        "message": STR,
        "fields": array(obj({"field": STR, "message": STR})),
    },
    optional=("fields",),
    description="every error: a code, a text, and on 422 the invalid fields",
)

COMPONENTS: dict[str, dict[str, Any]] = {"Error": ERROR}


def add_component(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Name a schema shared by several operations; returns its ``$ref``."""
    COMPONENTS[name] = schema
    return ref(name)


# ---------------------------------------------------------------------- the contract


def _routes(app: web.Application) -> list[tuple[str, str, Any]]:
    out = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method in ("HEAD", "*"):
            continue
        path = resource.canonical
        if not path.startswith(PREFIX) or path in PUBLIC_PATHS:
            continue
        out.append((route.method.lower(), path, route.handler))
    return out


@web.middleware
async def query_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """A described route refuses query parameters it does not take (400): ``?staton=X``
    must not quietly answer for every station."""
    if request.query and request.path.startswith(PREFIX):
        route = request.match_info.route
        op = operation_of(getattr(route, "handler", None))
        if op is not None:
            known = {p.name for p in op.query}
            unknown = sorted({k for k in request.query if k not in known})
            if unknown:
                takes = ", ".join(sorted(known)) or "none"
                names = ", ".join(repr(k[:40]) for k in unknown[:5])
                return web.json_response(
                    {
                        "status": "error",
                        "error": "invalid_query",
                        "message": f"unknown query parameter {names} (this path takes: {takes})",
                    },
                    status=400,
                )
    return await handler(request)


def undocumented(app: web.Application) -> list[str]:
    """``METHOD path`` of each ``/api/v1`` route without an :func:`operation`."""
    return sorted(f"{m.upper()} {p}" for m, p, h in _routes(app) if operation_of(h) is None)


def _path_params(path: str) -> list[str]:
    names, rest = [], path
    while "{" in rest:
        start = rest.index("{")
        end = rest.index("}", start)
        names.append(rest[start + 1 : end].split(":")[0])
        rest = rest[end + 1 :]
    return names


def _answer(answer: Answer) -> dict[str, Any]:
    out: dict[str, Any] = {"description": answer.description}
    if not answer.empty:
        out["content"] = {answer.media: {"schema": answer.schema or {}}}
    return out


def _operation(method: str, path: str, op: Operation) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    names = _path_params(path)
    for name in names:
        params.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": op.path.get(name, {"type": "string", "minLength": 1}),
            }
        )
    for q in op.query:
        p: dict[str, Any] = {"name": q.name, "in": "query", "schema": q.schema}
        if q.description:
            p["description"] = q.description
        if q.required:
            p["required"] = True
        params.append(p)
    responses = {str(code): _answer(a) for code, a in sorted(op.responses.items())}
    defaults = {
        401: "no or wrong credentials",
        429: "too many wrong passwords from here: wait Retry-After seconds",
        503: "the database is unavailable: try again later",
    }
    if op.query:
        defaults[400] = "a query parameter is invalid"
    if names:
        defaults[404] = "no such object"
    if op.body is not None:
        defaults[400] = "the body is not JSON"
        defaults[413] = "the body is too large"
        defaults[422] = "the body is invalid (fields names each invalid field)"
    for code, text in defaults.items():
        responses.setdefault(str(code), _answer(fails(text)))
    out: dict[str, Any] = {
        "operationId": f"{method}_{path[len(PREFIX) :]}".replace("/", "_")
        .replace("{", "")
        .replace("}", "")
        .replace(".", "_")
        .replace("-", "_"),
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
    }
    if op.description:
        out["description"] = op.description
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {op.body_media: {"schema": op.body}},
        }
    return out


def build_spec(app: web.Application, version: str, server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every documented ``/api/v1`` route of ``app``."""
    paths: dict[str, dict[str, Any]] = {}
    tags: list[str] = []
    for method, path, handler in sorted(_routes(app), key=lambda r: (r[1], r[0])):
        op = operation_of(handler)
        if op is None:
            continue
        paths.setdefault(path, {})[method] = _operation(method, path, op)
        if op.tag not in tags:
            tags.append(op.tag)
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "csms operator API",
            "version": version,
            "description": (
                "The operator API of csms (OCPP 1.6J central system with an OCPI 2.2.1 "
                "bridge). JSON, HTTP Basic with the admin credentials. Errors: "
                '{"status": "error", "error": CODE, "message": TEXT}; lists: '
                '{"items", "total", "limit", "offset"}.'
            ),
        },
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(COMPONENTS.items())),
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
        },
        "security": [{"basic": []}],
    }
    if server_url:
        spec["servers"] = [{"url": server_url}]
    return spec


# ---------------------------------------------------------------------- serving it


def package_version() -> str:
    """csms's version as installed (the contract's ``info.version``)."""
    try:
        return importlib.metadata.version("csms-mobie")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _schema_text(schema: dict[str, Any] | None) -> str:
    if not schema:
        return ""
    text = json.dumps(schema, indent=1, ensure_ascii=False)
    if len(text) > 4000:
        text = text[:4000] + "\n..."
    return f"<pre>{html.escape(text)}</pre>"


def render_docs(spec: dict[str, Any]) -> str:
    """The contract as one plain HTML page (no script, nothing fetched elsewhere)."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(spec['info']['title'])}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:70rem;margin:1rem auto;"
        "padding:0 1rem}code,pre{font-size:.85rem}pre{background:#f4f4f4;padding:.5rem;"
        "overflow:auto;max-height:20rem}details{margin:.3rem 0;border-bottom:1px solid #ddd}"
        "summary{cursor:pointer;padding:.3rem 0}.m{display:inline-block;width:4.5rem;"
        "font-weight:bold}table{border-collapse:collapse}td,th{padding:.2rem .5rem;"
        "border:1px solid #ddd;text-align:left;vertical-align:top}</style></head><body>",
        f"<h1>{html.escape(spec['info']['title'])} {html.escape(spec['info']['version'])}</h1>",
        f"<p>{html.escape(spec['info']['description'])}</p>",
        f"<p>Machine-readable: <a href='{SPEC_PATH}'><code>{SPEC_PATH}</code></a> "
        "(OpenAPI 3.1).</p>",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append((method, path, op))
    for tag, ops in by_tag.items():
        parts.append(f"<h2 id='{html.escape(tag)}'>{html.escape(tag)}</h2>")
        for method, path, op in ops:
            parts.append(
                f"<details id='{html.escape(op['operationId'])}'><summary>"
                f"<span class='m'>{method.upper()}</span><code>{html.escape(path)}</code> "
                f"&mdash; {html.escape(op['summary'])}</summary>"
            )
            if op.get("description"):
                parts.append(f"<p>{html.escape(op['description'])}</p>")
            if op.get("parameters"):
                parts.append("<table><tr><th>parameter</th><th>in</th><th>schema</th></tr>")
                for p in op["parameters"]:
                    parts.append(
                        f"<tr><td><code>{html.escape(p['name'])}</code></td>"
                        f"<td>{p['in']}</td><td><code>"
                        f"{html.escape(json.dumps(p['schema']))}</code> "
                        f"{html.escape(p.get('description', ''))}</td></tr>"
                    )
                parts.append("</table>")
            body = op.get("requestBody")
            if body:
                media, content = next(iter(body["content"].items()))
                parts.append(f"<p>Body ({html.escape(media)}):</p>")
                parts.append(_schema_text(content.get("schema")))
            parts.append("<table><tr><th>answer</th><th>what</th></tr>")
            for code, answer in op["responses"].items():
                parts.append(
                    f"<tr><td>{html.escape(code)}</td><td>"
                    f"{html.escape(answer['description'])}</td></tr>"
                )
            parts.append("</table></details>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in spec["components"]["schemas"].items():
        parts.append(f"<h3 id='schema-{html.escape(name)}'>{html.escape(name)}</h3>")
        parts.append(_schema_text(schema))
    parts.append("</body></html>")
    return "\n".join(parts)


def contract_routes(app: web.Application, version: str) -> list[web.RouteDef]:
    """``/api/v1/openapi.json`` and ``/api/v1/docs``, built once from ``app``'s routes at
    the first request (when every component has added its own)."""
    cache: dict[str, Any] = {}

    def spec() -> dict[str, Any]:
        if "spec" not in cache:
            cache["spec"] = build_spec(app, version)
            cache["json"] = json.dumps(cache["spec"], ensure_ascii=False).encode()
            cache["html"] = render_docs(cache["spec"])
        return cache

    async def serve_json(request: web.Request) -> web.Response:
        return web.Response(body=spec()["json"], content_type="application/json")

    async def serve_docs(request: web.Request) -> web.Response:
        return web.Response(
            text=spec()["html"],
            content_type="text/html",
            headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
        )

    return [web.get(SPEC_PATH, serve_json), web.get(DOCS_PATH, serve_docs)]
