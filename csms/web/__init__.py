"""The operator web interface: server-rendered pages on the HTTP port, behind a login.

Pages: ``/login``, ``/`` (dashboard), ``/stations``, ``/stations/{id}`` (admins: commands,
``/stations/{id}/edit``), ``/new-station``, ``/sessions``, ``/sessions/{id}`` (its power
and energy chart, :mod:`csms.web.chart_pages`), ``/id-tags``, ``/exports``
(CSV downloads, ``/exports/sessions.csv``); ``/live/...``
serves the live parts of pages as JSON for ``static/app.js``. Roles: ``viewer`` reads
everything; ``admin`` also sends commands and changes stations and id tags. Any request
that is not GET or HEAD needs an admin session and its CSRF token, whatever its path.

csms knows nothing of OCPI. Extensions add to the interface through **providers**
registered on ``system.web`` (a :class:`WebUI`, which exists before extensions'
``attach()`` runs)::

    system.web.add_provider(provider)

A provider is any object with a ``name`` (a Python identifier) and any of these members:

``title``
    Heading of its panels and columns: a text, or ``{"pt": ..., "en": ...}``.
``nav``
    A list of :class:`NavEntry` (or a method returning one): links in the navigation bar.
``routes``
    A list of :class:`WebRoute` (or a method returning one): pages of its own, behind the
    same login and role checks as ours (``access="user"`` or ``"admin"``; anything but
    GET/HEAD is admin-only and CSRF-checked, its form then in
    ``system.web.form(request)``; ``system.web.session_of(request)`` is the user). A
    handler renders with the shared layout by
    ``system.web.render(request, "NAME/page.html", {...})``; its templates extend
    ``layout.html`` and may use ``t(key)``, ``when(utc, tz)``, ``kwh(wh)``, ``csrf``.
``templates``
    A directory (or a Jinja loader) of its templates, reachable as ``NAME/<file>``.
``messages``
    ``{"pt": {key: text}, "en": {key: text}}`` added to the catalogue for ``t(key)``.
``exports``
    A list of ``(path, label)``: a download button each on the ``/exports`` page, which
    submits its filters (``from``, ``to``, ``station``, ``token``, ``format``) to ``path``,
    a GET route of the provider's (csms.exports has the parsing and the streamed CSV; a
    refused filter is answered with ``system.web.exports_page(request, message, status)``).
``async dashboard(request) -> dict``
    Data for its dashboard panel (e.g. the hub link: registered, last push, failing).
``async stations(request, station_ids) -> dict[station_id, dict]``
    Data for its column in the stations list (e.g. EVSE statuses in MOBI.E's words).
``async station(request, station_id) -> dict``
    Data for its panel on a station's page.
``async sessions(request, transaction_ids) -> dict[transaction_id, dict]``
    Data for its column in the sessions list (e.g. what the hub acknowledged).

Each hook's data reaches the page as ``data`` in the provider's fragment template,
``NAME/dashboard.html``, ``NAME/stations_cell.html``, ``NAME/station.html`` or
``NAME/sessions_cell.html`` (``provider`` is its :class:`ProviderView`; the cells also get
``station`` or ``session``, the row). Without that template a generic one shows the
dict's keys and values. Hooks run on every page view and live refresh (every
``web.refresh_seconds``): keep them to a few indexed queries for the ids given. A hook
that fails or takes longer than 3 s is logged and shows nothing; the page still works.
"""

from .interface import WebUI
from .ui import CentralSystemView, NavEntry, ProviderView, WebRoute

__all__ = ["CentralSystemView", "NavEntry", "ProviderView", "WebRoute", "WebUI"]
