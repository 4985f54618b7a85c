"""The operator web interface: the machinery of :mod:`csms.web.ui` with csms's own pages.

Kept apart from both so that the pages import the machinery and nothing imports back.
"""

from __future__ import annotations

from aiohttp import web

from .pages import Pages
from .ui import CentralSystemView, WebBase, WebRoute


class WebUI(WebBase):
    """The operator web interface of one central system (see :mod:`csms.web`)."""

    def __init__(self, system: CentralSystemView) -> None:
        super().__init__(system)
        self.pages = Pages(self)

    def own_routes(self) -> list[WebRoute]:
        return self.pages.routes()

    def exports_page(
        self, request: web.Request, error: str = "", status: int = 200
    ) -> web.StreamResponse:
        """The exports page (its filters from the request's query), with an error: what a
        provider's export download answers when its filter is refused."""
        return self.pages.export_page(request, error, status)
