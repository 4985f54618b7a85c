"""Configuration: one TOML file, validated at start-up, with environment overrides.

Any key can be overridden by an environment variable ``CSMS_<SECTION>__<KEY>`` (for example
``CSMS_OCPP__PORT=9001``; a top-level key is ``CSMS_<KEY>``). Secrets are best given that
way, or with the named variables below, rather than written in the file:

- ``CSMS_ADMIN_PASSWORD``: the API admin password, in clear (hashed in memory at start);
- ``CSMS_API__ADMIN_PASSWORD_HASH``: its hash, from ``csms hash-password``.

A value that would break a MOBI.E rule is refused while ``mobie_mode`` is on (the default):
lower intervals are fine (tests use seconds), higher ones are not.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .passwords import is_password_hash

# MOBI.E rules R3 and R4 (seed 000, section 3)
MOBIE_HEARTBEAT_INTERVAL = 120
MOBIE_MAX_METER_VALUE_SAMPLE_INTERVAL = 300


class ConfigError(Exception):
    """The configuration is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OcppSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(9000, ge=0, le=65535)
    path_prefix: str = "/ocpp"
    accept_unknown_stations: bool = False
    # refuse stations without a password at the handshake (401), and definitions without one;
    # off by default for compatibility: without a password, anyone knowing an id can displace it
    require_password: bool = False
    heartbeat_interval: int = Field(MOBIE_HEARTBEAT_INTERVAL, ge=1)
    meter_value_sample_interval: int = Field(60, ge=1)
    boot_retry_interval: int = Field(60, ge=1, description="interval given with Pending/Rejected")
    call_timeout: float = Field(30.0, gt=0, description="seconds to wait for a station's answer")
    ping_interval: float = Field(60.0, ge=0, description="0 disables keep-alive pings")
    ping_timeout: float = Field(60.0, ge=0, description="0 waits for pongs forever")
    max_message_size: int = Field(1 << 20, ge=1024)
    # connections on the OCPP port, in all (lowered to fit the file descriptor limit), and
    # still in their opening handshake, in all and from one address (csms.ocpp_guard)
    max_connections: int = Field(50_000, ge=1, le=10_000_000)
    max_handshakes: int = Field(4096, ge=1, le=1_000_000)
    max_handshakes_per_address: int = Field(64, ge=1, le=1_000_000)
    # sources that cap does not apply to (this machine's processes; trusted_proxies too)
    handshake_cap_exempt: list[str] = ["127.0.0.0/8", "::1/128"]
    # distinct unknown charge point ids remembered (the oldest are forgotten and counted)
    max_unknown_stations: int = Field(1000, ge=1, le=1_000_000)
    # sampled values stored per transaction; the excess is counted and flagged, not stored
    max_meter_values_per_transaction: int = Field(100_000, ge=1)
    # an open transaction with no meter or transaction message for this long is listed as
    # stuck (GET /api/v1/transactions/stuck), besides a later Available or a reboot
    stuck_silence_hours: float = Field(12.0, gt=0, le=24 * 365)
    provision_on_boot: bool = Field(True, description="set R3/R4 intervals after each boot")
    # wss:// on this port, with the [tls] certificate (security profiles 2 and 3)
    tls: bool = False
    # whether a security profile 1 station may connect over plain ws:// (Basic auth in
    # clear); on for compatibility, an internet-facing csms should set it false
    allow_unsecured: bool = True
    # TLS-terminating proxies (addresses or networks) whose ``X-Forwarded-Proto: https``
    # makes a connection count as TLS (profile 2 only: profile 3 needs csms's own TLS)
    trusted_proxies: list[str] = []

    @model_validator(mode="after")
    def _prefix(self) -> OcppSettings:
        prefix = "/" + self.path_prefix.strip("/")
        self.path_prefix = "" if prefix == "/" else prefix
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        _check_networks("ocpp.trusted_proxies", v)
        return v

    @field_validator("handshake_cap_exempt")
    @classmethod
    def _exempt(cls, v: list[str]) -> list[str]:
        _check_networks("ocpp.handshake_cap_exempt", v)
        return v


class HttpSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    # a request's line and headers must all arrive this long after its first byte
    header_timeout: float = Field(10.0, gt=0, le=3600)
    # a request's body must have arrived this long after its headers
    read_timeout: float = Field(30.0, gt=0, le=3600)
    # a keep-alive connection with no request for this long is closed
    idle_timeout: float = Field(60.0, gt=0, le=3600)
    # a client that reads nothing of our answer for this long is disconnected
    write_timeout: float = Field(30.0, gt=0, le=3600)
    # open connections on the HTTP port, and from one address (trusted proxies excepted);
    # also never more than a quarter of the process's file descriptor limit
    max_connections: int = Field(512, ge=1, le=1_000_000)
    max_connections_per_address: int = Field(64, ge=1, le=1_000_000)
    # https:// for the API, OCPI, the web interface and /metrics, with the [tls] certificate
    tls: bool = False


class TlsSettings(_Section):
    """TLS served by csms itself (``ocpp.tls``, ``http.tls``) and trusted for its calls.

    The key's passphrase, if it is encrypted, comes from the environment only
    (``CSMS_TLS__KEY_PASSWORD``), never from the file."""

    cert_file: Path | None = None  # the server's certificate chain (PEM), leaf first
    key_file: Path | None = None  # its private key (PEM)
    key_password: SecretStr | None = None  # (CSMS_TLS__KEY_PASSWORD only)
    # the CA certificate(s) that stations' client certificates must chain to (profile 3)
    station_ca_file: Path | None = None
    # more CAs trusted for csms's own calls (OCPI peers, other nodes), beside the system's
    ca_file: Path | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"


class DatabaseSettings(_Section):
    path: str = "csms.sqlite3"  # relative to data_dir
    # postgresql://user:password@host:port/dbname (CSMS_DATABASE__URL): csms on PostgreSQL
    # instead of the SQLite file above
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("postgresql://", "postgres://", "sqlite:")):
            raise ValueError("must start with postgresql:// (or sqlite:PATH)")
        return v or None

    synchronous: Literal["FULL", "NORMAL"] = "FULL"

    @property
    def url_is_postgres(self) -> bool:
        return bool(self.url and self.url.startswith(("postgresql://", "postgres://")))


class ClusterSettings(_Section):
    # how the other processes of a PostgreSQL cluster reach this one's HTTP server (its
    # internal routes: commands for the stations it holds, a delivery worker's state), e.g.
    # http://10.0.0.5:8080. Default: http://<http.host, or this machine's name>:<http.port>
    advertise_url: str | None = None

    @field_validator("advertise_url")
    @classmethod
    def _advertise(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/") if v else None


class ApiSettings(_Section):
    admin_user: str = Field("admin", min_length=1)
    admin_password_hash: str | None = None
    # the largest ?timeout= (seconds) of a command sent through the API
    max_command_timeout: float = Field(300.0, gt=0, le=86400)


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class IdTagSettings(_Section):
    accept_unknown: bool = Field(False, description="answer Accepted for tags not in the store")


class LocalListSettings(_Section):
    """Local authorization lists kept in sync with the stations (csms.local_lists)."""

    enabled_by_default: bool = Field(False, description="for stations not switched on or off")
    check_interval: float = Field(3600.0, ge=1, le=7 * 86400, description="GetLocalListVersion")
    recompute_interval: float = Field(30.0, gt=0, le=3600, description="desired list re-read")
    reconnect_delay: float = Field(10.0, ge=0, le=3600, description="after a reconnect")
    max_entries: int = Field(10_000, ge=1, le=100_000, description="desired list read at most")
    default_send_max: int = Field(20, ge=1, le=10_000, description="without SendLocalListMaxLength")
    concurrency: int = Field(4, ge=1, le=100, description="stations synced at once")
    retry_min: float = Field(10.0, gt=0, le=3600)
    retry_max: float = Field(600.0, gt=0, le=86400)


class WebUser(_Section):
    """A web interface user given in the configuration (``[[web.users]]``)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    role: Literal["admin", "viewer"]
    password_hash: str

    @model_validator(mode="after")
    def _hash(self) -> WebUser:
        if not is_password_hash(self.password_hash):
            raise ValueError(f"user {self.name}: password_hash is not made by `csms hash-password`")
        return self


class WebSettings(_Section):
    """The operator web interface (csms.web), served on the HTTP port."""

    enabled: bool = True
    default_language: Literal["pt", "en"] = "pt"
    # the zone of "today" on the dashboard and of dates typed in forms (stations use their own)
    time_zone: str = "Europe/Lisbon"
    session_hours: float = Field(12.0, gt=0, description="a login lasts at most this long")
    session_idle_minutes: float = Field(120.0, gt=0, description="ends after this much idle")
    login_max_failures: int = Field(5, ge=1, description="per user name and per address")
    login_lockout_minutes: float = Field(15.0, gt=0)
    # addresses of reverse proxies whose X-Forwarded-Proto / X-Forwarded-For are believed
    trusted_proxies: list[str] = []
    refresh_seconds: float = Field(5.0, ge=0.2, description="live pages poll this often")
    page_size: int = Field(50, ge=5, le=500)
    users: list[WebUser] = []

    @model_validator(mode="after")
    def _check(self) -> WebSettings:
        import ipaddress
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise _KeyError("web.time_zone", f"unknown IANA time zone {self.time_zone!r}") from None
        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise _KeyError(
                    "web.trusted_proxies", f"{entry!r} is not an IP address or network"
                ) from None
        names = [u.name for u in self.users]
        if len(set(names)) != len(names):
            raise _KeyError("web.users", "each user name may appear once")
        return self


class PkiSettings(_Section):
    """The operator's certificate authority for station certificates (the security
    extension's SignCertificate), and what csms checks of a station's CSR."""

    # the CPO name a station's CSR must carry as O= (its CN must be the charge point id)
    organization: str | None = Field(None, min_length=1, max_length=64)
    # the CA that signs station certificates (PEM); the key's passphrase, if any, only from
    # the environment: CSMS_PKI__CA_KEY_PASSWORD
    ca_cert_file: Path | None = None
    ca_key_file: Path | None = None
    ca_key_password: SecretStr | None = None
    station_certificate_days: int = Field(365, ge=1, le=3650)
    # an external CA instead: a command (a list: program and arguments, run without a
    # shell) given the CSR in PEM on stdin and the station id in CSMS_STATION_ID, which
    # prints the certificate chain in PEM on stdout within sign_timeout seconds
    sign_command: list[str] | None = None
    sign_timeout: float = Field(30.0, gt=0, le=600)
    # certificates expiring within this many days are counted (and shown) as expiring
    expiry_warning_days: int = Field(30, ge=1, le=3650)
    # GetLog: the URL stations upload to is <upload_base_url>/uploads/logs/<token>
    # (default: http://<http.host or this machine's name>:<http.port>); the largest file
    upload_base_url: str | None = None
    max_log_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024, le=1 << 34)
    upload_token_hours: float = Field(24.0, gt=0, le=24 * 30)

    @field_validator("ca_cert_file", "ca_key_file", mode="before")
    @classmethod
    def _empty_path(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("sign_command")
    @classmethod
    def _command(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or not v[0].strip()):
            raise ValueError('must name a program: ["/path/to/program", "arg", ...]')
        return v or None

    @field_validator("upload_base_url")
    @classmethod
    def _upload_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/") if v else None

    @model_validator(mode="after")
    def _pair(self) -> PkiSettings:
        if (self.ca_cert_file is None) != (self.ca_key_file is None):
            raise _KeyError(
                "pki.ca_cert_file", "give both ca_cert_file and ca_key_file, or neither"
            )
        return self


class AlertSettings(_Section):
    """Alerts (csms.alerts): webhooks and e-mail when a station faults, stays offline, or
    the pushes to an OCPI peer keep failing. The webhook HMAC secret and the SMTP password
    come from the environment only: CSMS_ALERTS__WEBHOOK_SECRET, CSMS_ALERTS__SMTP_PASSWORD."""

    webhook_urls: list[str] = Field(default_factory=list, max_length=10)
    webhook_secret: SecretStr | None = None
    webhook_timeout: float = Field(10.0, gt=0, le=120)
    offline_minutes: float = Field(30.0, gt=0, le=7 * 24 * 60)
    check_seconds: float = Field(60.0, gt=0, le=3600)
    push_failing_minutes: float = Field(15.0, ge=0, le=7 * 24 * 60)
    push_failing_attempts: int = Field(5, ge=1, le=10_000)
    retry_base_seconds: float = Field(30.0, gt=0, le=3600)
    retry_max_seconds: float = Field(3600.0, gt=0, le=86400)
    max_attempts: int = Field(20, ge=1, le=1000)
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_from: str | None = None
    smtp_to: list[str] = Field(default_factory=list, max_length=50)
    smtp_starttls: bool = True
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout: float = Field(20.0, gt=0, le=300)

    @field_validator("webhook_urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r}: must start with http:// or https://")
        return v

    @model_validator(mode="after")
    def _smtp(self) -> AlertSettings:
        if self.smtp_host and not (self.smtp_from and self.smtp_to):
            raise _KeyError("alerts.smtp_from", "smtp_from and smtp_to are needed with smtp_host")
        return self


class FirmwareSettings(_Section):
    """Firmware campaigns and diagnostics (csms.firmware, csms.diagnostics)."""

    # the largest firmware file POST /api/v1/firmware accepts (kept in <data_dir>/firmware/)
    max_file_bytes: int = Field(512 * 1024 * 1024, ge=1024, le=1 << 36)
    # how long a station's download URL (/downloads/firmware/<token>) works
    download_token_hours: float = Field(48.0, gt=0, le=24 * 30)
    # GetDiagnostics: the largest upload (<data_dir>/diagnostics/<station>/), how long its
    # one-time URL (/uploads/diagnostics/<token>) works
    max_diagnostics_bytes: int = Field(100 * 1024 * 1024, ge=1024, le=1 << 34)
    diagnostics_token_hours: float = Field(24.0, gt=0, le=24 * 30)
    # how often the campaign scheduler looks at running campaigns (it also wakes on news)
    scheduler_seconds: float = Field(10.0, gt=0, le=3600)
    # the default time zone of a campaign's daily window
    time_zone: str = "Europe/Lisbon"

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"{v!r}: not a time zone name (e.g. Europe/Lisbon)") from None
        return v


class Settings(_Section):
    data_dir: Path = Path("data")
    mobie_mode: bool = True
    ocpp: OcppSettings = OcppSettings()
    http: HttpSettings = HttpSettings()
    tls: TlsSettings = TlsSettings()
    database: DatabaseSettings = DatabaseSettings()
    cluster: ClusterSettings = ClusterSettings()
    api: ApiSettings = ApiSettings()
    logging: LoggingSettings = LoggingSettings()
    id_tags: IdTagSettings = IdTagSettings()
    local_lists: LocalListSettings = LocalListSettings()
    web: WebSettings = WebSettings()
    pki: PkiSettings = PkiSettings()
    alerts: AlertSettings = AlertSettings()
    firmware: FirmwareSettings = FirmwareSettings()
    # a token that GET /metrics requires (Bearer, or the Basic password); from the
    # environment as CSMS_METRICS_TOKEN. None: /metrics is open
    metrics_token: str | None = Field(None, min_length=16)
    # sections owned by extensions (e.g. [ocpi]), validated by them
    _extension_sections: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)

    def extension_section(self, name: str) -> dict[str, Any]:
        return self._extension_sections.get(name, {})

    @model_validator(mode="after")
    def _tls_files(self) -> Settings:
        if (self.ocpp.tls or self.http.tls) and not (self.tls.cert_file and self.tls.key_file):
            which = "ocpp.tls" if self.ocpp.tls else "http.tls"
            missing = "tls.cert_file" if not self.tls.cert_file else "tls.key_file"
            raise _KeyError(missing, f"required when {which} is on (the server's PEM files)")
        return self

    @model_validator(mode="after")
    def _mobie_rules(self) -> Settings:
        if self.mobie_mode:
            if self.ocpp.heartbeat_interval > MOBIE_HEARTBEAT_INTERVAL:
                raise _KeyError(
                    "ocpp.heartbeat_interval",
                    f"{self.ocpp.heartbeat_interval} s breaks MOBI.E rule R4 "
                    f"(heartbeats every {MOBIE_HEARTBEAT_INTERVAL} s); use at most "
                    f"{MOBIE_HEARTBEAT_INTERVAL} or set mobie_mode = false",
                )
            if self.ocpp.meter_value_sample_interval > MOBIE_MAX_METER_VALUE_SAMPLE_INTERVAL:
                raise _KeyError(
                    "ocpp.meter_value_sample_interval",
                    f"{self.ocpp.meter_value_sample_interval} s breaks MOBI.E rule R3 "
                    f"(meter values at least every {MOBIE_MAX_METER_VALUE_SAMPLE_INTERVAL} s); "
                    f"use at most {MOBIE_MAX_METER_VALUE_SAMPLE_INTERVAL} "
                    "or set mobie_mode = false",
                )
        return self

    @property
    def database_path(self) -> Path:
        p = Path(self.database.path)
        return p if p.is_absolute() else self.data_dir / p


def _check_networks(key: str, entries: list[str]) -> None:
    import ipaddress

    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise _KeyError(key, f"{entry!r} is not an IP address or network") from None


class _KeyError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


ENV_PREFIX = "CSMS_"


def _parse_env_value(text: str) -> Any:
    """An environment value as TOML would read it, else as a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_env(
    data: dict[str, Any], environ: dict[str, str], extensions: Iterable[str] = ()
) -> dict[str, Any]:
    """``CSMS_SECTION__KEY=value`` overrides ``[section] key``. A variable named
    ``CSMS_<EXTENSION>_<NAME>`` (one underscore after an extension's name, e.g.
    ``CSMS_ADHOC_STRIPE_SECRET_KEY``) is that extension's own (its secrets): not
    configuration, and left to it."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    owned = tuple(f"{e.lower()}_" for e in extensions)
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "CSMS_ADMIN_PASSWORD":
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if len(path) == 1 and owned and path[0].startswith(owned):
            continue
        target = data
        for part in path[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{name}: {'.'.join(path[:-1])} is not a section")
        target[path[-1]] = _parse_env_value(text)
    return data


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _KeyError):
            lines.append(str(ctx_error))
            continue
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see config.example.toml)"
        lines.append(f"{key}: {msg}")
    return "\n".join(lines)


def load_settings(
    path: str | Path | None,
    environ: dict[str, str] | None = None,
    extensions: tuple[str, ...] | list[str] = (),
) -> Settings:
    """Read, merge with the environment and validate. Raises ConfigError naming the key.

    Top-level sections named in ``extensions`` are set aside, unvalidated, for the
    extension that owns them (:meth:`Settings.extension_section`)."""
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            with p.open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
    pki_section = data.get("pki")
    if isinstance(pki_section, dict) and "ca_key_password" in pki_section:
        raise ConfigError(
            "pki.ca_key_password: give the CA key's passphrase in the environment only "
            "(CSMS_PKI__CA_KEY_PASSWORD), never in the file"
        )
    tls_section = data.get("tls")
    if isinstance(tls_section, dict) and "key_password" in tls_section:
        raise ConfigError(
            "tls.key_password: give the key's passphrase in the environment only "
            "(CSMS_TLS__KEY_PASSWORD), never in the file"
        )
    alerts_section = data.get("alerts")
    for secret in ("webhook_secret", "smtp_password"):
        if isinstance(alerts_section, dict) and secret in alerts_section:
            raise ConfigError(
                f"alerts.{secret}: give it in the environment only "
                f"(CSMS_ALERTS__{secret.upper()}), never in the file"
            )
    data = apply_env(data, environ, extensions)
    for secret in ("webhook_secret", "smtp_password"):  # (taken as written, as below)
        if environ.get(f"CSMS_ALERTS__{secret.upper()}"):
            data.setdefault("alerts", {})[secret] = environ[f"CSMS_ALERTS__{secret.upper()}"]
    if environ.get("CSMS_TLS__KEY_PASSWORD"):
        # a passphrase is taken as written (never as a TOML number or boolean)
        data.setdefault("tls", {})["key_password"] = environ["CSMS_TLS__KEY_PASSWORD"]
    if environ.get("CSMS_PKI__CA_KEY_PASSWORD"):
        # a passphrase is taken as written (never as a TOML number or boolean)
        data.setdefault("pki", {})["ca_key_password"] = environ["CSMS_PKI__CA_KEY_PASSWORD"]
    sections = {}
    for name in extensions:
        section = data.pop(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{name}: must be a section ([{name}])")
        sections[name] = section
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None
    settings._extension_sections = sections
    if path is not None and not settings.data_dir.is_absolute():
        # a relative data_dir is relative to the working directory, as documented
        settings.data_dir = Path(os.getcwd()) / settings.data_dir
    return settings
