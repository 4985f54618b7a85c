"""The web interface's machinery: routes behind login and roles, rendering, providers.

See :mod:`csms.web` for the provider seam. The pages themselves (:mod:`csms.web.pages`) are
built on this machinery; :class:`csms.web.WebUI` puts the two together.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import structlog
from aiohttp import web
from aiohttp.web_request import FileField
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PrefixLoader,
    select_autoescape,
)
from markupsafe import Markup, escape
from multidict import MultiDictProxy

from ..store import JobDb
from ..timeparse import to_db
from . import fmt
from .auth import LANG_COOKIE, SESSION_COOKIE, Auth, WebSession, same_token
from .i18n import CATALOGUE, LANGUAGES, translate
from .queries import WebQueries
from .users import NAME as NAME_PATTERN

if TYPE_CHECKING:
    from ..clock import Clock
    from ..commands import CommandPort, ConnectionRegistry
    from ..config import Settings
    from ..handlers import Services
    from ..store import Store
    from ..traffic import TrafficMonitor

log = structlog.get_logger("csms.web")

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
PROVIDER_TIMEOUT = 3.0
READ_METHODS = ("GET", "HEAD")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SESSION_KEY: web.RequestKey[WebSession | None] = web.RequestKey("csms_web_session")
FORM_KEY: web.RequestKey[MultiDictProxy[str | bytes | FileField]] = web.RequestKey("csms_web_form")

_lang: contextvars.ContextVar[str] = contextvars.ContextVar("csms_web_lang", default="pt")


@dataclass(frozen=True, slots=True)
class WebRoute:
    """A page of the web interface.

    ``access``: ``"user"`` (any logged-in user, viewer or admin) or ``"admin"``. Whatever
    it says, a request with a method other than GET or HEAD is refused (403) unless the
    user is an admin and the form carries the session's CSRF token (field ``csrf``); its
    parsed form is then ``WebBase.form(request)``.
    """

    method: str
    path: str
    handler: Handler
    access: str = "user"
    json: bool = False  # answers JSON: 401 instead of a redirect to the login page


@dataclass(frozen=True, slots=True)
class NavEntry:
    """A link in the navigation bar; ``label`` is a text or ``{"pt": ..., "en": ...}``."""

    path: str
    label: str | Mapping[str, str]
    admin_only: bool = False


@dataclass(frozen=True, slots=True)
class ProviderView:
    """What templates know of a provider."""

    name: str
    title: str
    has_stations: bool
    has_sessions: bool


def current_language() -> str:
    """The language of the page being rendered (``pt`` or ``en``)."""
    return _lang.get()


def localized(label: str | Mapping[str, str], lang: str) -> str:
    if isinstance(label, str):
        return label
    return label.get(lang) or label.get("en") or next(iter(label.values()), "")


class CentralSystemView(Protocol):
    """What the web interface uses of the central system (csms.app.CentralSystem), which
    it does not import: the central system builds the interface."""

    settings: Settings
    store: Store
    clock: Clock
    services: Services
    registry: ConnectionRegistry
    commands: CommandPort
    traffic: TrafficMonitor
    admin_password_hash: str


class WebBase:
    """The operator web interface's machinery for one central system, and its provider
    registry; the pages of csms come with :class:`csms.web.WebUI`."""

    def __init__(self, system: CentralSystemView) -> None:
        self.system = system
        self.settings = system.settings.web
        self.queries = WebQueries(system.store)
        self.auth = Auth(self.settings, system.store, system.clock)
        self.providers: list[Any] = []
        self.catalogue = {lang: dict(words) for lang, words in CATALOGUE.items()}
        self._provider_loaders: dict[str, BaseLoader] = {}
        self.env = Environment(
            loader=ChoiceLoader(
                [FileSystemLoader(str(TEMPLATES)), PrefixLoader(self._provider_loaders)]
            ),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(
            t=self.t,
            when=lambda value, tz=None, seconds=True: fmt.when(value, tz, _lang.get(), seconds),
            kwh=lambda wh: fmt.kwh(wh, _lang.get()),
            number=lambda value, decimals=0: fmt.number(value, _lang.get(), decimals),
            duration=fmt.duration,
            interval=lambda seconds: fmt.interval(seconds, _lang.get()),
            provider_title=lambda p: p.title,
        )
        self._app: web.Application | None = None
        self._routes: list[WebRoute] = []
        self._viewer_posts: set[str] = set()
        self._flash: OrderedDict[str, dict[str, Any]] = OrderedDict()

    # ------------------------------------------------------------------ registry

    def mount(self, app: web.Application) -> None:
        """Serve the interface (and the routes of providers added so far) on ``app``."""
        self._app = app
        app.router.add_static("/static/", STATIC, name="csms-web-static")
        for route in self._routes:
            self._register(route)
        for route in self.own_routes():
            self.add_route(route)
        self._viewer_posts.add("/logout")
        app.on_startup.append(self._check_users)

    def own_routes(self) -> list[WebRoute]:
        """The interface's own pages, mounted after the providers' routes added so far."""
        return []

    async def _check_users(self, app: web.Application) -> None:
        """With no user at all (none configured, none in the database), the API's admin (name
        and password) becomes the interface's first admin: the password the first `make run`
        prints opens both. Nothing is done once any web user exists."""
        if self.settings.users:
            return
        row = await self.system.store.read_one("SELECT COUNT(*) AS n FROM web_users")
        if row and row["n"]:
            return
        name = self.system.settings.api.admin_user
        password_hash = self.system.admin_password_hash
        now = to_db(self.system.clock.now())

        async def job(db: JobDb) -> bool:
            if await db.execute_fetchall("SELECT 1 FROM web_users"):
                return False  # (another process of a cluster was first)
            await db.execute(
                "INSERT INTO web_users (name, role, password_hash, created_at, updated_at) "
                "VALUES (?, 'admin', ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                (name, password_hash, now, now),
            )
            return True

        if NAME_PATTERN.fullmatch(name) and await self.system.store.write(job):
            log.info(
                "web interface: no users yet; the API admin is its first admin (same name and "
                "password); add others, or change it, with `csms user add NAME --role admin`",
                user=name,
            )
        elif not NAME_PATTERN.fullmatch(name):
            log.warning(
                "web interface: no users yet; add one with "
                "`csms user add NAME --role admin --config FILE` (or [[web.users]])"
            )

    def add_route(self, route: WebRoute) -> None:
        if route.access not in ("user", "admin", "public"):
            raise ValueError(f"access must be 'user' or 'admin', not {route.access!r}")
        self._routes.append(route)
        if self._app is not None:
            self._register(route)

    def _register(self, route: WebRoute) -> None:
        assert self._app is not None
        self._app.router.add_route(route.method, route.path, self._guard(route))

    def add_provider(self, provider: Any) -> None:
        """Register a provider (see :mod:`csms.web`); call before the system starts."""
        name = getattr(provider, "name", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError("a web provider needs a `name` that is a Python identifier")
        if any(p.name == name for p in self.providers):
            raise ValueError(f"a web provider named {name!r} is already registered")
        self.providers.append(provider)
        templates = getattr(provider, "templates", None)
        if templates is not None:
            loader = (
                templates if isinstance(templates, BaseLoader) else FileSystemLoader(str(templates))
            )
            self._provider_loaders[name] = loader
        for lang, words in (getattr(provider, "messages", None) or {}).items():
            self.catalogue.setdefault(lang, {}).update(words)
        routes = getattr(provider, "routes", None)
        for route in routes() if callable(routes) else routes or []:
            self.add_route(route)

    @property
    def routes(self) -> list[WebRoute]:
        return list(self._routes)

    def post_routes(self) -> list[WebRoute]:
        """Every route that changes something (tests POST to each as a viewer)."""
        return [r for r in self._routes if r.method not in READ_METHODS and r.access != "public"]

    # ------------------------------------------------------------------ access

    def _guard(self, route: WebRoute) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            _lang.set(self.language(request))
            session = await self.auth.session(request.cookies.get(SESSION_COOKIE))
            request[SESSION_KEY] = session
            if route.access != "public":
                if session is None:
                    if route.json:
                        return web.json_response({"error": "login required"}, status=401)
                    raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
                if request.method not in READ_METHODS:
                    if not session.is_admin and route.path not in self._viewer_posts:
                        log.warning(
                            "web: change refused to a viewer",
                            user=session.user,
                            path=request.path,
                        )
                        return self.error(request, 403, "error.admin_only")
                    form = await request.post()
                    if not same_token(_str(form.get("csrf")), session.csrf):
                        log.warning("web: CSRF token missing or wrong", path=request.path)
                        return self.error(request, 403, "error.csrf")
                    request[FORM_KEY] = form
                elif route.access == "admin" and not session.is_admin:
                    return self.error(request, 403, "error.admin_only")
            try:
                response = await route.handler(request)
            except web.HTTPException:
                raise
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("web page failed", path=request.path)
                response = web.Response(status=500, text="500: internal error; see the server log")
            return self.secure(response)

        return handler

    @staticmethod
    def secure(response: web.StreamResponse) -> web.StreamResponse:
        h = response.headers
        h.setdefault("Content-Security-Policy", CSP)
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "same-origin")
        h.setdefault("Cache-Control", "no-store")
        return response

    def language(self, request: web.Request) -> str:
        lang = request.cookies.get(LANG_COOKIE, "")
        return lang if lang in LANGUAGES else self.settings.default_language

    # ------------------------------------------------------------------ rendering

    def t(self, key: str, /, **values: Any) -> str:
        """The text of ``key`` in the page's language. A value that is markup (a time from
        ``when()``) stays markup, and the text around it is escaped."""
        if any(isinstance(v, Markup) for v in values.values()):
            text = escape(translate(self.catalogue, _lang.get(), key))
            try:
                return text.format(**values)
            except (KeyError, IndexError, ValueError):
                return text
        return translate(self.catalogue, _lang.get(), key, **values)

    @staticmethod
    def session_of(request: web.Request) -> WebSession | None:
        """The logged-in user's session (``.user``, ``.role``, ``.is_admin``, ``.csrf``)."""
        return request.get(SESSION_KEY)

    @staticmethod
    def form(request: web.Request) -> MultiDictProxy[str | bytes | FileField]:
        """The posted form of a POST (already read and CSRF-checked)."""
        return request[FORM_KEY]

    def provider_views(self) -> list[ProviderView]:
        lang = _lang.get()
        return [
            ProviderView(
                p.name,
                localized(getattr(p, "title", p.name), lang),
                callable(getattr(p, "stations", None)),
                callable(getattr(p, "sessions", None)),
            )
            for p in self.providers
        ]

    def _nav(self, request: web.Request, session: WebSession | None) -> list[dict[str, Any]]:
        lang = _lang.get()
        entries: list[NavEntry] = [
            NavEntry("/", self.t("nav.dashboard")),
            NavEntry("/stations", self.t("nav.stations")),
            NavEntry("/sessions", self.t("nav.sessions")),
            NavEntry("/id-tags", self.t("nav.tags")),
            NavEntry("/exports", self.t("nav.exports")),
        ]
        for p in self.providers:
            nav = getattr(p, "nav", None)
            entries.extend(nav() if callable(nav) else nav or [])
        out = []
        for e in entries:
            if e.admin_only and not (session and session.is_admin):
                continue
            active = request.path == e.path or (
                e.path != "/" and request.path.startswith(e.path.rstrip("/") + "/")
            )
            out.append({"path": e.path, "label": localized(e.label, lang), "active": active})
        return out

    def context(self, request: web.Request) -> dict[str, Any]:
        session = self.session_of(request)
        return {
            "lang": _lang.get(),
            "languages": LANGUAGES,
            "user": session,
            "is_admin": bool(session and session.is_admin),
            "csrf": session.csrf if session else "",
            "nav": self._nav(request, session),
            "here": request.path_qs,
            "refresh_ms": int(self.settings.refresh_seconds * 1000),
            "providers": self.provider_views(),
            "title": "",
        }

    def render_text(
        self, request: web.Request, template: str, context: Mapping[str, Any] | None = None
    ) -> str:
        ctx = self.context(request)
        ctx.update(context or {})
        return self.env.get_template(template).render(ctx)

    def render(
        self,
        request: web.Request,
        template: str,
        context: Mapping[str, Any] | None = None,
        status: int = 200,
    ) -> web.Response:
        """A page rendered with the shared layout (providers use this for their pages)."""
        return web.Response(
            text=self.render_text(request, template, context),
            status=status,
            content_type="text/html",
            charset="utf-8",
        )

    def error(self, request: web.Request, status: int, key: str, /, **values: Any) -> web.Response:
        response = self.render(
            request,
            "error.html",
            {
                "status": status,
                "title": self.t(f"error.title.{status}"),
                "message": self.t(key, **values),
            },
            status=status,
        )
        self.secure(response)
        return response

    # ------------------------------------------------------------------ providers' data

    async def provider_data(self, hook: str, request: web.Request, *args: Any) -> dict[str, Any]:
        """``{provider name: what its hook returned}``; a failing or slow hook gives {}."""
        out: dict[str, Any] = {}
        for p in self.providers:
            fn = getattr(p, hook, None)
            if not callable(fn):
                out[p.name] = {}
                continue
            try:
                out[p.name] = await asyncio.wait_for(fn(request, *args), PROVIDER_TIMEOUT) or {}
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("web provider hook failed", provider=p.name, hook=hook)
                out[p.name] = {}
        return out

    # ------------------------------------------------------------------ flash messages

    def flash(self, session: WebSession, data: dict[str, Any]) -> None:
        self._flash[session.id] = data
        self._flash.move_to_end(session.id)
        while len(self._flash) > 1000:
            self._flash.popitem(last=False)

    def pop_flash(self, session: WebSession | None) -> dict[str, Any] | None:
        return self._flash.pop(session.id, None) if session else None

    # ------------------------------------------------------------------ helpers

    def now(self) -> datetime:
        return self.system.clock.now()


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def query_string(params: Iterable[tuple[str, str]]) -> str:
    """``a=1&b=2&`` (ready for more) from the non-empty pairs."""
    return "".join(f"{quote(k)}={quote(v, safe='')}&" for k, v in params if v)
