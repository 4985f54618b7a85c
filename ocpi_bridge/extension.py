"""The OCPI bridge as a csms extension: the `[ocpi]` section, `csms ocpi ...` commands, the
/ocpi endpoints and the operator API's OCPI part (/api/v1/ocpi/..., /api/v1/tariffs)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

import aiohttp
import structlog

from csms.ports import (
    CsmsPort,
    Settings,
    SystemClock,
    TlsConfigError,
    configure_client,
    link_context,
    loopback_host,
    standalone_db,
)

from .admin import OcpiAdminApi
from .bridge import Bridge
from .config import OcpiSettings, load_ocpi_settings
from .credentials import new_token
from .deliveryview import LocalDelivery
from .server import OcpiHttp
from .store import Grant, OcpiStore
from .web import OcpiWebProvider

log = structlog.get_logger("ocpi")

# the package of the bridge's own migrations (its ocpi_* tables)
MIGRATIONS = "ocpi_bridge.migrations"


class OcpiExtension:
    name = "ocpi"

    def __init__(self) -> None:
        self.bridge: Bridge | None = None
        self._port: CsmsPort | None = None

    # ------------------------------------------------------------------ configuration

    def validate_config(self, raw: dict[str, Any], settings: Settings) -> OcpiSettings | None:
        return load_ocpi_settings(raw, settings.mobie_mode)

    # ------------------------------------------------------------------ in the daemon

    def attach(self, port: CsmsPort, config: OcpiSettings | None) -> None:
        if config is None:
            log.info("OCPI is disabled (no [ocpi] section, or enabled = false)")
            return
        port.db.add_migrations("ocpi", MIGRATIONS)
        self._port = port
        self.bridge = Bridge(config, port)
        self.bridge.client.allow_private = config.allow_private_peer_addresses
        if port.role == "delivery":  # pushes only: its node serves the endpoints and pages
            assert isinstance(self.bridge.delivery, LocalDelivery)
            port.http_app.add_routes(self.bridge.delivery.internal_routes())
            return
        port.add_token_source(self.bridge.token_source)
        # the tokens that may charge offline, on the stations' local lists (csms.local_lists)
        port.add_offline_list_source("ocpi", self.bridge.token_source.offline_entries)
        port.http_app.add_subapp("/ocpi", OcpiHttp(self.bridge).app())
        port.http_app.add_routes(OcpiAdminApi(self.bridge).routes())
        port.web.add_provider(OcpiWebProvider(self.bridge))

    async def start(self) -> None:
        if self.bridge is None or self._port is None:
            return
        host = _host(self._port.settings)
        scheme = "https" if self._port.settings.http.tls else "http"
        public_url = f"{scheme}://{host}:{self._port.http_port}"
        if self._port.role == "delivery":  # (its node has prepared the tokens)
            await self.bridge.start(public_url)
            return
        store = self.bridge.store
        # databases from before issue 12 kept the tokens we check in clear
        await store.digest_clear_tokens()
        s = self.bridge.settings
        if s.token_a:  # with its grant, before the bridge adds it (which keeps this row)
            await store.add_token_a(s.token_a, s.token_a_role, s.token_a_parties)
        await self.bridge.start(public_url)

    async def stop(self) -> None:
        if self.bridge is not None:
            await self.bridge.stop()

    # ------------------------------------------------------------------ command line

    def add_commands(
        self, parser: argparse.ArgumentParser, common: argparse.ArgumentParser
    ) -> None:
        sub = parser.add_subparsers(dest="ocpi_command", required=True)
        tok = sub.add_parser(
            "token-a",
            parents=[common],
            help="create a token A and print what to send to MOBI.E (annex I of its procedure)",
        )
        _grant_arguments(tok, "the peer that registers with this token A")
        reg = sub.add_parser(
            "register",
            parents=[common],
            help="register with a peer that gave us its versions URL and a token A",
        )
        reg.add_argument("--versions-url", required=True)
        reg.add_argument("--token", required=True, help="the token A the peer gave us")
        _grant_arguments(reg, "that peer")
        reg.add_argument(
            "--api",
            help="the running csms's HTTP base URL (default: from the configuration)",
        )
        sub.add_parser(
            "peers",
            parents=[common],
            help="list the registered OCPI peers (needs the running csms)",
        )

    async def run_command(self, args: argparse.Namespace, settings: Settings) -> int:
        config = load_ocpi_settings(settings.extension_section(self.name), settings.mobie_mode)
        if config is None:
            print(
                "csms ocpi: OCPI is disabled in this configuration ([ocpi] enabled)",
                file=sys.stderr,
            )
            return 2
        grant = None
        if args.ocpi_command in ("token-a", "register"):
            try:
                grant = Grant.make(args.role, args.party)
            except ValueError as e:
                print(f"csms ocpi {args.ocpi_command}: {e}", file=sys.stderr)
                return 2
        if args.ocpi_command == "token-a":
            assert grant is not None
            return await self._token_a(settings, config, grant)
        return await self._via_api(args, settings, grant)

    async def _token_a(self, settings: Settings, config: OcpiSettings, grant: Grant) -> int:
        """Works whether or not csms is running: the token goes straight to the database."""
        async with standalone_db(settings, "ocpi", MIGRATIONS) as db:
            token = new_token()
            ocpi = OcpiStore(db, SystemClock())
            await ocpi.digest_clear_tokens()
            await ocpi.add_token_a(token, grant.role, grant.party_texts())
        scheme = "https" if settings.http.tls else "http"
        base = (config.public_url or f"{scheme}://{_host(settings)}:{settings.http.port}").rstrip(
            "/"
        )
        print(
            "Send these to MOBI.E (mic@mobie.pt), as annex I of Procedimento MOBI.E 02/2023 asks:"
        )
        print(f"  Version endpoint: {base}/ocpi/versions")
        print(f"  Token A:          {token}")
        print(f"  Party ID:         {config.party_id} (country {config.country_code})")
        print(f"It grants: {grant.describe()} (a registration claiming more is refused)")
        if not config.public_url:
            print(
                "Note: ocpi.public_url is not set; MOBI.E needs the public https URL of your "
                "OCPI endpoints (https: csms's own, http.tls, or your TLS proxy's).",
                file=sys.stderr,
            )
        return 0

    async def _via_api(
        self, args: argparse.Namespace, settings: Settings, grant: Grant | None
    ) -> int:
        """Commands that need the running csms (it must answer the peer's callbacks)."""
        scheme = "https" if settings.http.tls else "http"
        base = (args.api if getattr(args, "api", None) else None) or (
            f"{scheme}://{_host(settings)}:{settings.http.port}"
        )
        try:
            configure_client(settings)  # (tls.ca_file; csms's own certificate on loopback)
        except TlsConfigError as e:
            print(f"csms ocpi: {e}", file=sys.stderr)
            return 2
        password = os.environ.get("CSMS_ADMIN_PASSWORD") or getpass.getpass(
            f"API password of {settings.api.admin_user}: "
        )
        auth = aiohttp.BasicAuth(settings.api.admin_user, password)
        connector = aiohttp.TCPConnector(ssl=link_context(base))
        async with aiohttp.ClientSession(auth=auth, connector=connector) as session:
            if args.ocpi_command == "register":
                assert grant is not None
                body = {
                    "versions_url": args.versions_url,
                    "token": args.token,
                    "role": grant.role,
                    "parties": grant.party_texts(),
                }
                method, url = "POST", f"{base}/api/v1/ocpi/register"
            else:
                body, method, url = None, "GET", f"{base}/api/v1/ocpi/peers"
            try:
                async with session.request(method, url, json=body) as resp:
                    text = await resp.text()
                    ok = resp.status < 300
            except aiohttp.ClientError as e:
                print(f"csms ocpi: cannot reach csms at {base}: {e}", file=sys.stderr)
                return 1
        print(text)
        return 0 if ok else 1


def _grant_arguments(parser: argparse.ArgumentParser, who: str) -> None:
    parser.add_argument(
        "--role",
        required=True,
        choices=("HUB", "EMSP", "SCSP"),
        type=str.upper,
        help=f"what {who} may be: HUB (MOBI.E: every party's sessions and CDRs), EMSP, or SCSP "
        "(a smart charging party: chargingprofiles only)",
    )
    parser.add_argument(
        "--party",
        required=True,
        action="append",
        metavar="CC/PID",
        help=f"a party {who} may speak for, e.g. PT/MOB (repeat for more)",
    )


def _host(settings: Settings) -> str:
    return loopback_host(settings.http.host)
