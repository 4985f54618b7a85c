"""Ad hoc charging as a csms extension: the ``[adhoc]`` section, the public pages, the
payment worker and the operator's API and pages."""

from __future__ import annotations

import argparse
from typing import Any

import structlog

from csms.ports import ConfigError, CsmsPort, Proxies, Settings, loopback_host

from .config import AdhocSettings, load_adhoc_settings
from .providers.base import Provider

log = structlog.get_logger("adhoc")

MIGRATIONS = "adhoc.migrations"


class AdhocExtension:
    name = "adhoc"

    def __init__(self) -> None:
        self._port: CsmsPort | None = None
        self.settings: AdhocSettings | None = None
        self.service: Any = None

    def validate_config(self, raw: dict[str, Any], settings: Settings) -> AdhocSettings | None:
        config = load_adhoc_settings(raw)
        if config is None:
            return None
        ocpi = settings.extension_section("ocpi")
        if not ocpi or ocpi.get("enabled") is False:
            raise ConfigError(
                "adhoc: ad hoc charging needs the OCPI bridge ([ocpi] enabled): its tariffs "
                "(type AD_HOC_PAYMENT) give the price shown and charged"
            )
        if config.provider == "stripe":
            make_provider(config)  # the secrets are checked now, not at the first payment
        return config

    def add_commands(
        self, parser: argparse.ArgumentParser, common: argparse.ArgumentParser
    ) -> None:
        parser.add_subparsers(dest="adhoc_command")

    async def run_command(self, args: argparse.Namespace, settings: Settings) -> int:
        return 2

    def attach(self, port: CsmsPort, config: AdhocSettings | None) -> None:
        if config is None:
            log.info("ad hoc charging is disabled (no [adhoc] section, or enabled = false)")
            return
        port.db.add_migrations("adhoc", MIGRATIONS)
        if port.role == "delivery":  # (the OCPP nodes serve the pages and run the payments)
            return
        from .admin_web import AdhocWebProvider
        from .api import AdhocApi
        from .service import AdhocService
        from .web import ChargePages

        self._port = port
        self.settings = config
        self.service = AdhocService(port, config, make_provider(config))
        port.add_token_source(self.service.token_source)
        https = (config.public_url or "").startswith("https://") or port.settings.http.tls
        pages = ChargePages(self.service, Proxies(port.settings.web.trusted_proxies), https)
        port.http_app.add_subapp("/charge", pages.app())
        port.http_app.add_routes(AdhocApi(self.service).routes())
        port.web.add_provider(AdhocWebProvider(self.service))

    async def start(self) -> None:
        if self.service is None or self._port is None:
            return
        settings = self._port.settings
        scheme = "https" if settings.http.tls else "http"
        host = loopback_host(settings.http.host)
        await self.service.start(f"{scheme}://{host}:{self._port.http_port}")

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()


def make_provider(config: AdhocSettings) -> Provider:
    """The configured payment provider (its secrets from the environment)."""
    if config.provider == "stripe":
        from .providers.stripe import StripeProvider, StripeSettings

        return StripeProvider(
            StripeSettings.from_env(
                api_base=config.stripe.api_base,
                methods=config.stripe.methods,
                timeout=config.stripe.timeout,
            )
        )
    from .providers.manual import ManualProvider

    return ManualProvider()
