"""Smart charging as a csms extension: the ``[smart]`` section, the profiles and sites
service, its API and its web pages."""

from __future__ import annotations

import argparse
from typing import Any

import structlog

from csms.ports import CsmsPort, Settings

from .config import SmartSettings, load_smart_settings

log = structlog.get_logger("smartcharge")

MIGRATIONS = "smartcharge.migrations"


class SmartExtension:
    name = "smart"

    def __init__(self) -> None:
        self._port: CsmsPort | None = None
        self.service: Any = None

    def validate_config(self, raw: dict[str, Any], settings: Settings) -> SmartSettings | None:
        return load_smart_settings(raw)

    def add_commands(
        self, parser: argparse.ArgumentParser, common: argparse.ArgumentParser
    ) -> None:
        parser.add_subparsers(dest="smart_command")

    async def run_command(self, args: argparse.Namespace, settings: Settings) -> int:
        return 2

    def attach(self, port: CsmsPort, config: SmartSettings | None) -> None:
        if config is None:
            log.info("smart charging is disabled (no [smart] section, or enabled = false)")
            return
        port.db.add_migrations("smart", MIGRATIONS)
        if port.role == "delivery":  # (the OCPP nodes talk to the stations)
            return
        from .api import SmartApi
        from .service import SmartService
        from .web import SmartWebProvider

        self._port = port
        self.service = SmartService(port, config)
        port.provide_charging_limits(self.service)
        port.http_app.add_routes(SmartApi(self.service).routes())
        port.web.add_provider(SmartWebProvider(self.service))

    async def start(self) -> None:
        if self.service is not None:
            await self.service.start()

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
