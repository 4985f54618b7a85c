"""Smart charging in the operator's web interface (admins): the sites with their limit,
shares and a chart of their power against the limit, and each station's charging profiles
with the composite schedule drawn.

The pages only call :class:`smartcharge.service.SmartService`; every check of what is
posted is the service's (its :class:`~smartcharge.service.Refused` is shown as it is), and
this module only turns form fields into the bodies the API takes, refusing what is not even
a number or a time with a message that names the field.

Charts are inline SVG drawn here, on the server: the pages' Content-Security-Policy allows
no inline script nor style, so colours are SVG presentation attributes and nothing is
loaded from elsewhere. The drawing functions are pure (data and labels in, markup out).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from aiohttp import web
from markupsafe import Markup, escape

from csms.ports import NavEntry, WebRoute, WebUI, from_db, web_fmt

from .service import OPERATOR_MAX_ID, Refused, SmartService
from .share import SiteRules

TEMPLATES = Path(__file__).parent / "templates"
# a site's or a station's id, as the API takes them (whole text: no trailing new line)
ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# the power chart's periods: the query's ?range= and how far back each goes
RANGES = {"6h": timedelta(hours=6), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
DEFAULT_RANGE = "24h"
# the composite schedule's lengths offered (seconds)
DURATIONS = (3600, 6 * 3600, 86400)
MAX_POINTS = 1500  # a chart draws at most this many points (7 days are 10,080 minutes)
MAX_STATION_PERIODS = 1000  # of a station's GetCompositeSchedule answer, the first drawn
MAX_LIMIT = Decimal(100000)  # the API's bound of a dynamic limit
NEW_SITE = {"phases": "3", "voltage": "230", "min_per_evse": "6", "unit": "A"}

POWER_COLOUR = "#1849a9"
AREA_COLOUR = "#b2ccff"
LIMIT_COLOUR = "#c62828"
STATION_COLOUR = "#101828"
GRID_COLOUR = "#e4e7ec"
AXIS_COLOUR = "#667085"
TEXT_COLOUR = "#344054"
SVG_NS = "http://www.w3.org/2000/svg"

MESSAGES = {
    "en": {
        "smart.sites": "Sites",
        "smart.sites_intro": "Stations that share one grid connection: csms shares the site's "
        "limit among their charging cars and keeps every station on a safe default.",
        "smart.no_sites": "No sites yet.",
        "smart.site": "Site",
        "smart.id": "Id",
        "smart.name": "Name",
        "smart.limit_now": "Limit now",
        "smart.stations": "Stations",
        "smart.transactions": "Transactions",
        "smart.shares_sum": "Sum of shares",
        "smart.new_site": "New site",
        "smart.limit": "Limit",
        "smart.unit": "Unit",
        "smart.unit_a": "A per phase",
        "smart.unit_kw": "kW in total",
        "smart.phases": "Phases",
        "smart.voltage": "Voltage (V, phase to neutral)",
        "smart.min_per_evse": "Minimum per EVSE (A)",
        "smart.windows": "Time-of-day limits",
        "smart.windows_hint": "e.g. 08:00-22:00=50, in the site's unit; empty: none",
        "smart.time_zone": "Time zone",
        "smart.stations_pick": "Stations",
        "smart.stations_more": "Other stations (ids, separated by commas)",
        "smart.create": "Create the site",
        "smart.created": "Site {id} created.",
        "smart.saved": "Site {id} saved.",
        "smart.rules": "Rules",
        "smart.edit_rules": "Change the rules",
        "smart.save": "Save",
        "smart.base": "Base limit",
        "smart.window": "Time-of-day limit",
        "smart.dynamic": "Dynamic limit",
        "smart.in_force": "in force",
        "smart.until": "until",
        "smart.no_window": "no window now",
        "smart.no_dynamic": "none",
        "smart.set_limit": "Set the dynamic limit",
        "smart.clear_limit": "Clear the dynamic limit",
        "smart.limit_set": "Dynamic limit set.",
        "smart.limit_cleared": "Dynamic limit cleared.",
        "smart.until_optional": "Until (optional, {zone})",
        "smart.members": "Stations of the site",
        "smart.priority": "Priority",
        "smart.priority_hint": "-100 to 100; higher charges first",
        "smart.remove": "Remove",
        "smart.add_stations": "Add stations (ids, separated by commas)",
        "smart.save_members": "Save the stations",
        "smart.no_members": "No stations in this site.",
        "smart.allocations": "Shares of the charging cars",
        "smart.no_allocations": "No car is charging at this site.",
        "smart.connector": "Connector",
        "smart.transaction": "Transaction",
        "smart.share": "Share (A)",
        "smart.drawing": "Draws (A)",
        "smart.state": "State",
        "smart.updated": "Updated",
        "smart.profiles_link": "Charging profiles",
        "smart.station_page": "Station",
        "smart.delete_site": "Remove the site",
        "smart.delete_confirm": "Yes, remove it (its profiles come off its stations)",
        "smart.deleted": "Site {id} removed.",
        "smart.power": "Power and limit",
        "smart.power_title": "Power of site {site} against its limit",
        "smart.power_desc": "{n} minutes with measurements from {start} to {end}; "
        "peak {peak} kW; limit now {limit} kW.",
        "smart.power_axis": "Power (kW)",
        "smart.time_axis": "Time ({zone})",
        "smart.legend_power": "Power (kW)",
        "smart.legend_limit": "Limit (kW)",
        "smart.no_power": "No power measured at this site in this period yet.",
        "smart.range": "Period",
        "smart.peak": "Peak",
        "smart.profiles": "Charging profiles",
        "smart.profiles_of": "Charging profiles of {station}",
        "smart.profiles_intro": "The profiles csms keeps for this station (re-applied after a "
        "reboot or a reconnection) and what the station answered.",
        "smart.in_site": "In site {site} (priority {priority}).",
        "smart.no_site": "Not in any site.",
        "smart.no_profiles": "No charging profiles.",
        "smart.profile_id": "Id",
        "smart.purpose": "Purpose",
        "smart.stack_level": "Stack level",
        "smart.kind": "Kind",
        "smart.periods": "Periods",
        "smart.origin": "Origin",
        "smart.error": "Error",
        "smart.clear": "Clear",
        "smart.cleared": "Profile {id} cleared; the station answered: {answer}.",
        "smart.new_profile": "Add a profile (SetChargingProfile)",
        "smart.id_optional": "Id (optional: the next free one)",
        "smart.recurrency": "Recurrency (Recurring only)",
        "smart.periods_hint": "start in seconds:limit, e.g. 0:16, 3600:10",
        "smart.start_schedule": "Schedule start (optional, {zone})",
        "smart.duration": "Duration (s, optional)",
        "smart.valid_from": "Valid from (optional, {zone})",
        "smart.valid_to": "Valid to (optional, {zone})",
        "smart.add": "Add",
        "smart.profile_added": "Profile {id} kept; the station's answer: {state}.",
        "smart.refused": "Refused",
        "smart.composite": "Composite schedule",
        "smart.composite_intro": "What csms expects the connector to apply, from the profiles "
        "it keeps, next to what the station says (GetCompositeSchedule).",
        "smart.show": "Show",
        "smart.length": "Length",
        "smart.composite_title": "Composite schedule of {station}, connector {connector}",
        "smart.composite_desc": "csms expects {expected}; the station says {station}.",
        "smart.expected": "csms expects",
        "smart.station_says": "the station says",
        "smart.agree": "They agree.",
        "smart.differ": "They differ.",
        "smart.not_connected": "The station is not connected: only csms's expectation.",
        "smart.station_error": "The station did not answer: {error}",
        "smart.station_no_schedule": "The station gave no schedule (status {status}).",
        "smart.no_limit": "no limit",
        "smart.limit_axis": "Limit ({unit})",
        "smart.seconds": "{n} s",
        "smart.hours": "{n} h",
        "smart.station_panel": "Smart charging",
        "smart.field": "{field}: {message}",
    },
    "pt": {
        "smart.sites": "Instalações",
        "smart.sites_intro": "Postos que partilham uma ligação à rede: o csms reparte o limite "
        "da instalação pelos carros a carregar e mantém cada posto num limite seguro.",
        "smart.no_sites": "Ainda não há instalações.",
        "smart.site": "Instalação",
        "smart.id": "Id",
        "smart.name": "Nome",
        "smart.limit_now": "Limite agora",
        "smart.stations": "Postos",
        "smart.transactions": "Transações",
        "smart.shares_sum": "Soma das partes",
        "smart.new_site": "Nova instalação",
        "smart.limit": "Limite",
        "smart.unit": "Unidade",
        "smart.unit_a": "A por fase",
        "smart.unit_kw": "kW no total",
        "smart.phases": "Fases",
        "smart.voltage": "Tensão (V, fase-neutro)",
        "smart.min_per_evse": "Mínimo por EVSE (A)",
        "smart.windows": "Limites por hora do dia",
        "smart.windows_hint": "p. ex. 08:00-22:00=50, na unidade da instalação; vazio: nenhum",
        "smart.time_zone": "Fuso horário",
        "smart.stations_pick": "Postos",
        "smart.stations_more": "Outros postos (ids, separados por vírgulas)",
        "smart.create": "Criar a instalação",
        "smart.created": "Instalação {id} criada.",
        "smart.saved": "Instalação {id} guardada.",
        "smart.rules": "Regras",
        "smart.edit_rules": "Alterar as regras",
        "smart.save": "Guardar",
        "smart.base": "Limite base",
        "smart.window": "Limite da hora do dia",
        "smart.dynamic": "Limite dinâmico",
        "smart.in_force": "em vigor",
        "smart.until": "até",
        "smart.no_window": "nenhum período agora",
        "smart.no_dynamic": "nenhum",
        "smart.set_limit": "Definir o limite dinâmico",
        "smart.clear_limit": "Retirar o limite dinâmico",
        "smart.limit_set": "Limite dinâmico definido.",
        "smart.limit_cleared": "Limite dinâmico retirado.",
        "smart.until_optional": "Até (opcional, {zone})",
        "smart.members": "Postos da instalação",
        "smart.priority": "Prioridade",
        "smart.priority_hint": "-100 a 100; a mais alta carrega primeiro",
        "smart.remove": "Retirar",
        "smart.add_stations": "Acrescentar postos (ids, separados por vírgulas)",
        "smart.save_members": "Guardar os postos",
        "smart.no_members": "Esta instalação não tem postos.",
        "smart.allocations": "Partes dos carros a carregar",
        "smart.no_allocations": "Nenhum carro está a carregar nesta instalação.",
        "smart.connector": "Conector",
        "smart.transaction": "Transação",
        "smart.share": "Parte (A)",
        "smart.drawing": "Consome (A)",
        "smart.state": "Estado",
        "smart.updated": "Atualizado",
        "smart.profiles_link": "Perfis de carregamento",
        "smart.station_page": "Posto",
        "smart.delete_site": "Apagar a instalação",
        "smart.delete_confirm": "Sim, apagar (os seus perfis saem dos postos)",
        "smart.deleted": "Instalação {id} apagada.",
        "smart.power": "Potência e limite",
        "smart.power_title": "Potência da instalação {site} face ao seu limite",
        "smart.power_desc": "{n} minutos com medições de {start} a {end}; "
        "máximo {peak} kW; limite agora {limit} kW.",
        "smart.power_axis": "Potência (kW)",
        "smart.time_axis": "Hora ({zone})",
        "smart.legend_power": "Potência (kW)",
        "smart.legend_limit": "Limite (kW)",
        "smart.no_power": "Ainda não há potência medida nesta instalação neste período.",
        "smart.range": "Período",
        "smart.peak": "Máximo",
        "smart.profiles": "Perfis de carregamento",
        "smart.profiles_of": "Perfis de carregamento de {station}",
        "smart.profiles_intro": "Os perfis que o csms mantém neste posto (reenviados depois "
        "de um reinício ou de uma nova ligação) e o que o posto respondeu.",
        "smart.in_site": "Na instalação {site} (prioridade {priority}).",
        "smart.no_site": "Não pertence a nenhuma instalação.",
        "smart.no_profiles": "Sem perfis de carregamento.",
        "smart.profile_id": "Id",
        "smart.purpose": "Finalidade",
        "smart.stack_level": "Nível",
        "smart.kind": "Tipo",
        "smart.periods": "Períodos",
        "smart.origin": "Origem",
        "smart.error": "Erro",
        "smart.clear": "Retirar",
        "smart.cleared": "Perfil {id} retirado; o posto respondeu: {answer}.",
        "smart.new_profile": "Acrescentar um perfil (SetChargingProfile)",
        "smart.id_optional": "Id (opcional: o próximo livre)",
        "smart.recurrency": "Recorrência (só Recurring)",
        "smart.periods_hint": "início em segundos:limite, p. ex. 0:16, 3600:10",
        "smart.start_schedule": "Início do horário (opcional, {zone})",
        "smart.duration": "Duração (s, opcional)",
        "smart.valid_from": "Válido desde (opcional, {zone})",
        "smart.valid_to": "Válido até (opcional, {zone})",
        "smart.add": "Acrescentar",
        "smart.profile_added": "Perfil {id} guardado; resposta do posto: {state}.",
        "smart.refused": "Recusado",
        "smart.composite": "Horário composto",
        "smart.composite_intro": "O que o csms espera que o conector aplique, pelos perfis "
        "que mantém, ao lado do que o posto diz (GetCompositeSchedule).",
        "smart.show": "Mostrar",
        "smart.length": "Duração",
        "smart.composite_title": "Horário composto de {station}, conector {connector}",
        "smart.composite_desc": "O csms espera {expected}; o posto diz {station}.",
        "smart.expected": "o csms espera",
        "smart.station_says": "o posto diz",
        "smart.agree": "Estão de acordo.",
        "smart.differ": "São diferentes.",
        "smart.not_connected": "O posto não está ligado: só a expectativa do csms.",
        "smart.station_error": "O posto não respondeu: {error}",
        "smart.station_no_schedule": "O posto não deu horário (estado {status}).",
        "smart.no_limit": "sem limite",
        "smart.limit_axis": "Limite ({unit})",
        "smart.seconds": "{n} s",
        "smart.hours": "{n} h",
        "smart.station_panel": "Carregamento inteligente",
        "smart.field": "{field}: {message}",
    },
}


# ---------------------------------------------------------------------------- forms


class FormError(ValueError):
    """A form field that is not even what the API's body needs (not a number, not a
    time): the field's name and why, shown next to the form."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _field(form: Mapping[str, Any], name: str, limit: int = 2000) -> str:
    value = form.get(name, "")
    if not isinstance(value, str):
        raise FormError(name, "a text field")
    if len(value) > limit:
        raise FormError(name, f"at most {limit} characters")
    return value.strip()


def parse_decimal(text: str, field: str) -> Decimal:
    """A number typed by a person: ``16``, ``16.5`` or, as Portuguese writes it, ``16,5``."""
    t = text.strip()
    if t.count(",") == 1 and "." not in t:
        t = t.replace(",", ".")
    if not re.fullmatch(r"-?[0-9]{1,9}(\.[0-9]{1,6})?", t):
        raise FormError(field, f"{text!r} is not a number")
    return Decimal(t)


def parse_int(text: str, field: str, low: int, high: int) -> int:
    t = text.strip()
    if not re.fullmatch(r"-?[0-9]{1,10}", t) or not low <= int(t) <= high:
        raise FormError(field, f"{text!r} is not a whole number from {low} to {high}")
    return int(t)


def parse_local_time(text: str, field: str, tz_name: str) -> datetime | None:
    """A datetime-local field (``YYYY-MM-DDTHH:MM``) in the interface's zone, as UTC; None
    when empty."""
    if not text.strip():
        return None
    try:
        value = web_fmt.parse_local_datetime(text, tz_name)
    except ValueError:
        raise FormError(field, f"{text!r} is not a date and time (YYYY-MM-DDTHH:MM)") from None
    assert value is not None
    return value


_PERIOD_SPLIT = re.compile(r"[;\n]|,(?=\s*[0-9]+\s*:)")
_PERIOD = re.compile(r"([0-9]{1,10})\s*:\s*([0-9]{1,9}(?:[.,][0-9]{1,3})?)")


def parse_periods(text: str) -> list[dict[str, Any]]:
    """``0:16, 3600:10`` (start in seconds: limit) as the schedule's periods. A comma is
    also a decimal comma (``0:16,5, 3600:10``): only a comma followed by ``START:`` separates
    periods. Order and the first start are the profile's rules, checked by the service."""
    items = [p.strip() for p in _PERIOD_SPLIT.split(text) if p.strip()]
    if not items:
        raise FormError("periods", "at least one period, e.g. 0:16")
    if len(items) > 1000:
        raise FormError("periods", "at most 1000 periods")
    out = []
    for item in items:
        m = _PERIOD.fullmatch(item)
        if m is None:
            raise FormError(
                "periods", f"{item!r} is not START:LIMIT (seconds:limit, e.g. 0:16, 3600:10)"
            )
        out.append(
            {
                "start_period": int(m.group(1)),
                "limit": Decimal(m.group(2).replace(",", ".")),
            }
        )
    return out


_WINDOW = re.compile(r"([0-9]{2}:[0-9]{2})\s*-\s*([0-9]{2}:[0-9]{2})\s*=\s*([0-9.,]+)")


def parse_windows(text: str) -> list[dict[str, Any]]:
    """``08:00-22:00=50; 22:00-08:00=80`` as the site's time-of-day windows (commas also
    separate them; times and overlaps are the rules' to check)."""
    items = [w.strip() for w in re.split(r"[;\n]|,(?=\s*[0-9]{2}:)", text) if w.strip()]
    if len(items) > 96:
        raise FormError("windows", "at most 96 windows")
    out = []
    for item in items:
        m = _WINDOW.fullmatch(item)
        if m is None:
            raise FormError("windows", f"{item!r} is not HH:MM-HH:MM=LIMIT (e.g. 08:00-22:00=50)")
        out.append(
            {"start": m.group(1), "end": m.group(2), "limit": parse_decimal(m.group(3), "windows")}
        )
    return out


def parse_station_ids(values: Sequence[str], text: str) -> list[str]:
    """Picked station ids and a typed comma (or space) separated list, without repeats,
    in the order given."""
    out: list[str] = []
    for sid in [*values, *re.split(r"[,;\s]+", text)]:
        sid = sid.strip()
        if not sid:
            continue
        if not ID_RE.fullmatch(sid):
            raise FormError("stations", f"{sid[:70]!r} is not a station id")
        if sid not in out:
            out.append(sid)
    if len(out) > 10000:
        raise FormError("stations", "at most 10000 stations")
    return out


def parse_rules(form: Mapping[str, Any], default_zone: str) -> dict[str, Any]:
    """The ``rules`` of a site's body from its form (the service validates them)."""
    unit = _field(form, "unit")
    if unit not in ("A", "kW"):
        raise FormError("unit", "A or kW")
    rules: dict[str, Any] = {
        "limit": parse_decimal(_field(form, "limit"), "limit"),
        "unit": unit,
        "phases": parse_int(_field(form, "phases") or "3", "phases", 1, 3),
        "voltage": parse_int(_field(form, "voltage") or "230", "voltage", 1, 100000),
        "min_per_evse": parse_decimal(_field(form, "min_per_evse") or "6", "min_per_evse"),
        "windows": parse_windows(_field(form, "windows")),
        "time_zone": _field(form, "time_zone", 64) or default_zone,
    }
    return rules


def parse_site_form(form: Any, default_zone: str) -> tuple[str, dict[str, Any]]:
    """The new-site form: (site id, the body of ``SmartService.put_site``)."""
    site_id = _field(form, "id", 64)
    if not ID_RE.fullmatch(site_id):
        raise FormError("id", "1 to 64 letters, digits, '.', '_', ':' or '-'")
    name = _field(form, "name", 200) or site_id
    members = parse_station_ids(_all(form, "stations"), _field(form, "stations_more", 100_000))
    return site_id, {
        "name": name,
        "rules": parse_rules(form, default_zone),
        "members": [{"station_id": s, "priority": 0} for s in members],
    }


def parse_members_form(form: Any, current: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The members form of a site: each current station's priority (``priority.<id>``)
    unless ``remove.<id>`` is ticked, then the added ones at priority 0."""
    out: list[dict[str, Any]] = []
    for m in current:
        sid = m["station_id"]
        if _field(form, f"remove.{sid}"):
            continue
        text = _field(form, f"priority.{sid}") or str(m.get("priority", 0))
        out.append(
            {"station_id": sid, "priority": parse_int(text, f"priority of {sid}", -100, 100)}
        )
    have = {m["station_id"] for m in out}
    removed = {m["station_id"] for m in current} - have
    for sid in parse_station_ids([], _field(form, "add", 100_000)):
        if sid not in have and sid not in removed:
            out.append({"station_id": sid, "priority": 0})
            have.add(sid)
    return out


def parse_dynamic_form(form: Any, tz_name: str) -> tuple[Decimal, datetime | None]:
    limit = parse_decimal(_field(form, "limit"), "limit")
    if not 0 <= limit <= MAX_LIMIT:
        raise FormError("limit", f"a number from 0 to {MAX_LIMIT}")
    return limit, parse_local_time(_field(form, "until"), "until", tz_name)


def parse_profile_form(form: Any, tz_name: str, next_id: int) -> tuple[int, dict[str, Any]]:
    """The add-a-profile form: (connector id, the snake-case profile of
    ``SmartService.set_profile``). Which combinations OCPP allows is the profile's model's
    to say (and the service's, for what the station supports)."""
    text_id = _field(form, "id")
    pid = parse_int(text_id, "id", 1, OPERATOR_MAX_ID) if text_id else next_id
    connector = parse_int(_field(form, "connector_id") or "0", "connector_id", 0, 100)
    purpose = _field(form, "purpose")
    if purpose not in ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"):
        raise FormError("purpose", "ChargePointMaxProfile, TxDefaultProfile or TxProfile")
    kind = _field(form, "kind")
    if kind not in ("Absolute", "Recurring", "Relative"):
        raise FormError("kind", "Absolute, Recurring or Relative")
    unit = _field(form, "unit")
    if unit not in ("A", "W"):
        raise FormError("unit", "A or W")
    schedule: dict[str, Any] = {
        "charging_rate_unit": unit,
        "periods": parse_periods(_field(form, "periods", 20_000)),
    }
    start = parse_local_time(_field(form, "start_schedule"), "start_schedule", tz_name)
    if start is not None:
        schedule["start_schedule"] = start
    duration = _field(form, "duration")
    if duration:
        schedule["duration"] = parse_int(duration, "duration", 1, 2**31 - 1)
    body: dict[str, Any] = {
        "id": pid,
        "stack_level": parse_int(_field(form, "stack_level") or "0", "stack_level", 0, 2**31 - 1),
        "purpose": purpose,
        "kind": kind,
        "schedule": schedule,
    }
    recurrency = _field(form, "recurrency")
    if recurrency:
        if recurrency not in ("Daily", "Weekly"):
            raise FormError("recurrency", "Daily or Weekly")
        body["recurrency"] = recurrency
    for name in ("valid_from", "valid_to"):
        value = parse_local_time(_field(form, name), name, tz_name)
        if value is not None:
            body[name] = value
    return connector, body


# ---------------------------------------------------------------------------- the limit now


@dataclass(frozen=True, slots=True)
class LimitPart:
    """One of the limits that may set a site's limit now, in the site's unit and in A."""

    kind: str  # base | window | dynamic
    value: Decimal
    amps: Decimal
    in_force: bool = False
    detail: str = ""  # the window's hours, the dynamic limit's end
    until: datetime | None = None


def limit_parts(
    rules: SiteRules, now: datetime, dynamic: Decimal | None, dynamic_until: datetime | None
) -> list[LimitPart]:
    """The base limit, the time-of-day window in force and the dynamic limit (when set and
    not ended), the lowest in amps marked in force: the same rule as
    :func:`smartcharge.share.site_limit_a`, spelled out for the operator."""
    local = now.astimezone(web_fmt.zone(rules.time_zone))
    minute = local.hour * 60 + local.minute
    parts = [LimitPart("base", rules.limit, rules.to_amps(rules.limit))]
    for w in rules.windows:
        if w.covers(minute):
            parts.append(
                LimitPart("window", w.limit, rules.to_amps(w.limit), detail=f"{w.start}-{w.end}")
            )
    if dynamic is not None and (dynamic_until is None or dynamic_until > now) and dynamic >= 0:
        parts.append(LimitPart("dynamic", dynamic, rules.to_amps(dynamic), until=dynamic_until))
    low = min(p.amps for p in parts)
    first = next(i for i, p in enumerate(parts) if p.amps == low)
    return [
        LimitPart(p.kind, p.value, p.amps, i == first, p.detail, p.until)
        for i, p in enumerate(parts)
    ]


# ---------------------------------------------------------------------------- charts


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at least ``value`` (1 if none)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if m * power >= value * (1 - 1e-9):
            return m * power
    return 10 * power


_TICK_STEPS = (600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 2 * 86400)


def time_ticks(
    start: datetime, end: datetime, tz_name: str, max_ticks: int = 8
) -> list[tuple[datetime, str]]:
    """Round local times between ``start`` and ``end`` for the time axis: ``HH:MM``, and
    ``DD/MM`` at local midnights (whole days for spans of days, so that they follow daylight
    saving)."""
    span = (end - start).total_seconds()
    if span <= 0:
        return []
    tz = web_fmt.zone(tz_name)
    step = next((s for s in _TICK_STEPS if span / s <= max_ticks), _TICK_STEPS[-1])
    local = start.astimezone(tz)
    out: list[tuple[datetime, str]] = []
    if step < 86400:
        midnight = datetime.combine(local.date(), time(0), tzinfo=tz)
        first = midnight + timedelta(
            seconds=math.ceil((local - midnight).total_seconds() / step) * step
        )
        t = first.astimezone(UTC)
        while t <= end and len(out) < max_ticks * 2:
            lt = t.astimezone(tz)
            midnight_here = lt.hour == 0 and lt.minute == 0
            out.append((t, lt.strftime("%d/%m" if midnight_here else "%H:%M")))
            t += timedelta(seconds=step)
        return out
    day = local.date() if local.time() == time(0) else local.date() + timedelta(days=1)
    while len(out) < max_ticks * 2:
        t = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
        if t > end:
            break
        out.append((t, day.strftime("%d/%m")))
        day += timedelta(days=step // 86400)
    return out


def _f(v: float) -> str:
    text = f"{v:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _text(x: float, y: float, content: str, anchor: str = "middle", extra: str = "") -> str:
    return (
        f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}" fill="{TEXT_COLOUR}"{extra}>'
        f"{escape(content)}</text>"
    )


def _svg_open(chart_id: str, width: int, height: int, title: str, desc: str) -> list[str]:
    cid = escape(chart_id)
    return [
        f'<svg xmlns="{SVG_NS}" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-labelledby="{cid}-title {cid}-desc" class="chart" id="{cid}" '
        f'font-family="sans-serif" font-size="12">',
        f'<title id="{cid}-title">{escape(title)}</title>',
        f'<desc id="{cid}-desc">{escape(desc)}</desc>',
    ]


@dataclass(frozen=True, slots=True)
class PowerPoint:
    """One minute of a site: its summed power and its limit then (both kW; None: not
    known)."""

    minute: datetime
    power_kw: float
    limit_kw: float | None


def downsample_power(points: Sequence[PowerPoint], limit: int = MAX_POINTS) -> list[PowerPoint]:
    """At most ``limit`` points: consecutive minutes grouped in equal-count buckets, each
    drawn at its first minute with its HIGHEST power and its LOWEST limit, so that a peak
    above the limit never disappears from the chart."""
    if len(points) <= limit:
        return list(points)
    size = math.ceil(len(points) / limit)
    out = []
    for i in range(0, len(points), size):
        chunk = points[i : i + size]
        limits = [p.limit_kw for p in chunk if p.limit_kw is not None]
        out.append(
            PowerPoint(
                chunk[0].minute, max(p.power_kw for p in chunk), min(limits) if limits else None
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class ChartText:
    """A chart's words, in the page's language (the drawing knows no language)."""

    title: str
    desc: str
    y_label: str
    x_label: str
    legend: tuple[str, str]


def power_chart(
    points: Sequence[PowerPoint],
    start: datetime,
    end: datetime,
    *,
    chart_id: str,
    text: ChartText,
    tz_name: str,
    lang: str,
) -> Markup:
    """A site's power per minute (an area under a line, broken where minutes are missing)
    and its limit as a step line, over [start, end], with time and kW axes and a legend."""
    width, height = 760, 300
    left, right, top, bottom = 64, 16, 34, 48
    pw, ph = width - left - right, height - top - bottom
    pts = downsample_power(sorted(points, key=lambda p: p.minute))
    span = max(60.0, (end - start).total_seconds())
    gap = timedelta(minutes=2) * max(1, math.ceil(len(points) / MAX_POINTS))
    peak = max(
        [p.power_kw for p in pts] + [p.limit_kw for p in pts if p.limit_kw is not None],
        default=0.0,
    )
    top_value = nice_max(peak * 1.05)

    def x(t: datetime) -> float:
        return left + pw * min(1.0, max(0.0, (t - start).total_seconds() / span))

    def y(v: float) -> float:
        return top + ph * (1 - min(1.0, max(0.0, v / top_value)))

    parts = _svg_open(chart_id, width, height, text.title, text.desc)
    divisions = 4 if abs(top_value / 10 ** math.floor(math.log10(top_value)) - 2) < 1e-6 else 5
    step_value = top_value / divisions
    decimals = next(
        (d for d in range(4) if abs(step_value * 10**d - round(step_value * 10**d)) < 1e-6), 3
    )
    for i in range(divisions + 1):
        yy = y(step_value * i)
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{_f(yy)}" y2="{_f(yy)}" '
            f'stroke="{GRID_COLOUR}"/>'
        )
        parts.append(_text(left - 6, yy + 4, web_fmt.number(step_value * i, lang, decimals), "end"))
    for t, label in time_ticks(start, end, tz_name):
        xx = x(t)
        parts.append(
            f'<line x1="{_f(xx)}" x2="{_f(xx)}" y1="{top}" y2="{top + ph}" stroke="{GRID_COLOUR}"/>'
        )
        parts.append(_text(xx, top + ph + 16, label))
    # the power: one run per stretch of consecutive minutes
    runs: list[list[PowerPoint]] = []
    for p in pts:
        if runs and p.minute - runs[-1][-1].minute <= gap:
            runs[-1].append(p)
        else:
            runs.append([p])
    area, line, dots = [], [], []
    base = _f(y(0))
    for run in runs:
        if len(run) == 1:  # a lone minute: a dot, which a path of one point would not show
            p = run[0]
            dots.append(
                f'<circle cx="{_f(x(p.minute))}" cy="{_f(y(p.power_kw))}" r="2.5" '
                f'fill="{POWER_COLOUR}" class="power-dot"/>'
            )
        coords = [f"{_f(x(p.minute))} {_f(y(p.power_kw))}" for p in run]
        line.append("M" + " L".join(coords))
        area.append(
            f"M{_f(x(run[0].minute))} {base} L" + " L".join(coords) + f" L{_f(x(run[-1].minute))} "
            f"{base} Z"
        )
    if pts:
        parts.append(
            f'<path d="{" ".join(area)}" fill="{AREA_COLOUR}" fill-opacity="0.6" '
            f'stroke="none" class="power-area"/>'
        )
        parts.append(
            f'<path d="{" ".join(line)}" fill="none" stroke="{POWER_COLOUR}" stroke-width="1.5" '
            f'stroke-linejoin="round" class="power" data-points="{len(pts)}"/>'
        )
        parts.extend(dots)
    # the limit: a step line, each minute's limit until the next minute with one; a level
    # is one horizontal stretch (a new one where the limit changes or the data breaks)
    levels: list[list[float]] = []  # [x0, x1, y, joined to the previous]
    for i, p in enumerate(pts):
        if p.limit_kw is None:
            continue
        if i + 1 < len(pts):
            nxt = pts[i + 1].minute
        else:  # the latest limit holds on to the chart's end, when that is now
            nxt = end if end - p.minute <= gap else p.minute + timedelta(minutes=1)
        if nxt - p.minute > gap:
            nxt = p.minute + timedelta(minutes=1)
        x0, x1, yy = x(p.minute), x(nxt), y(p.limit_kw)
        last = levels[-1] if levels else None
        joined = last is not None and abs(last[1] - x0) < 0.05
        if last is not None and joined and last[2] == yy:
            last[1] = x1
        else:
            levels.append([x0, x1, yy, float(joined)])
    if levels:
        d = " ".join(
            (f"V{_f(yy)}" if joined else f"M{_f(x0)} {_f(yy)}") + f" H{_f(x1)}"
            for x0, x1, yy, joined in levels
        )
        parts.append(
            f'<path d="{d}" fill="none" stroke="{LIMIT_COLOUR}" stroke-width="2" '
            f'class="limit" data-steps="{len(levels)}"/>'
        )
    parts.append(
        f'<path d="M{left} {top}V{top + ph}H{left + pw}" fill="none" stroke="{AXIS_COLOUR}"/>'
    )
    parts.append(
        _text(
            14, top + ph / 2, text.y_label, extra=f' transform="rotate(-90 14 {_f(top + ph / 2)})"'
        )
    )
    parts.append(_text(left + pw / 2, height - 6, text.x_label))
    parts.extend(_legend(left, 8, text.legend, (POWER_COLOUR, LIMIT_COLOUR), (False, False)))
    parts.append("</svg>")
    return Markup("".join(parts))


def _legend(
    x0: float, y0: float, labels: Sequence[str], colours: Sequence[str], dashed: Sequence[bool]
) -> list[str]:
    out = []
    lx = x0
    for label, colour, dash in zip(labels, colours, dashed, strict=True):
        extra = ' stroke-dasharray="6 4"' if dash else ""
        out.append(
            f'<line x1="{_f(lx)}" x2="{_f(lx + 22)}" y1="{_f(y0 + 6)}" y2="{_f(y0 + 6)}" '
            f'stroke="{colour}" stroke-width="3"{extra} data-legend="{escape(label)}"/>'
        )
        out.append(_text(lx + 28, y0 + 10, label, "start"))
        lx += 48 + 7 * len(label)
    return out


Steps = Sequence[tuple[int, float | None]]


def station_periods(answer: Any, start: datetime, limit: int = MAX_STATION_PERIODS) -> Steps | None:
    """The periods of a station's GetCompositeSchedule answer as (offset from ``start`` in
    seconds, limit), its own start (``scheduleStart``, else the schedule's
    ``startSchedule``) taken into account; None when it gave none or it cannot be read (a
    station's answer is not trusted)."""
    if not isinstance(answer, dict) or answer.get("status") != "Accepted":
        return None
    schedule = answer.get("chargingSchedule")
    if not isinstance(schedule, dict):
        return None
    periods = schedule.get("chargingSchedulePeriod")
    if not isinstance(periods, list) or not periods:
        return None
    shift = 0
    their_start = answer.get("scheduleStart") or schedule.get("startSchedule")
    if isinstance(their_start, str):
        at = web_fmt.as_datetime(their_start)
        if at is None or at.tzinfo is None:
            return None
        shift = int((at - start).total_seconds())
    out: list[tuple[int, float | None]] = []
    for p in periods[:limit]:
        if not isinstance(p, dict):
            return None
        offset, value = p.get("startPeriod"), p.get("limit")
        if (
            isinstance(offset, bool)
            or not isinstance(offset, int)
            or isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            return None
        out.append((offset + shift, float(value)))
    return out


def schedule_chart(
    expected: Steps,
    station: Steps | None,
    start: datetime,
    duration: int,
    *,
    unit: str,
    chart_id: str,
    text: ChartText,
    tz_name: str,
    lang: str,
) -> Markup:
    """csms's expected composite schedule (a wide light step line) and the station's (a
    dark dashed one on top: where they agree, the dashes lie on the wide line), over
    ``duration`` seconds from ``start``; a None limit (no profile limits) draws nothing."""
    width, height = 760, 260
    left, right, top, bottom = 64, 16, 34, 48
    pw, ph = width - left - right, height - top - bottom
    end = start + timedelta(seconds=duration)
    values = [v for _, v in expected if v is not None]
    values += [v for _, v in station or [] if v is not None]
    top_value = nice_max(max(values, default=0.0) * 1.1)

    def x(offset: float) -> float:
        return left + pw * min(1.0, max(0.0, offset / duration))

    def y(v: float) -> float:
        return top + ph * (1 - min(1.0, max(0.0, v / top_value)))

    parts = _svg_open(chart_id, width, height, text.title, text.desc)
    for i in range(5):
        v = top_value * i / 4
        yy = y(v)
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{_f(yy)}" y2="{_f(yy)}" '
            f'stroke="{GRID_COLOUR}"/>'
        )
        parts.append(_text(left - 6, yy + 4, web_fmt.number(v, lang, 1 if v % 1 else 0), "end"))
    for t, label in time_ticks(start, end, tz_name):
        xx = x((t - start).total_seconds())
        parts.append(
            f'<line x1="{_f(xx)}" x2="{_f(xx)}" y1="{top}" y2="{top + ph}" stroke="{GRID_COLOUR}"/>'
        )
        parts.append(_text(xx, top + ph + 16, label))

    def steps(series: Steps) -> tuple[str, int]:
        d, n = [], 0
        ordered = sorted((o, v) for o, v in series if o < duration)
        for i, (offset, value) in enumerate(ordered):
            nxt = ordered[i + 1][0] if i + 1 < len(ordered) else duration
            if value is None or nxt <= max(0, offset):
                continue
            d.append(f"M{_f(x(max(0, offset)))} {_f(y(value))} H{_f(x(nxt))}")
            n += 1
        return " ".join(d), n

    d, n = steps(expected)
    if d:
        parts.append(
            f'<path d="{d}" fill="none" stroke="{AREA_COLOUR}" stroke-width="7" '
            f'class="expected" data-periods="{n}"/>'
        )
    if station is not None:
        d, n = steps(station)
        if d:
            parts.append(
                f'<path d="{d}" fill="none" stroke="{STATION_COLOUR}" stroke-width="2" '
                f'stroke-dasharray="6 4" class="station" data-periods="{n}"/>'
            )
    parts.append(
        f'<path d="M{left} {top}V{top + ph}H{left + pw}" fill="none" stroke="{AXIS_COLOUR}"/>'
    )
    parts.append(
        _text(
            14, top + ph / 2, text.y_label, extra=f' transform="rotate(-90 14 {_f(top + ph / 2)})"'
        )
    )
    parts.append(_text(left + pw / 2, height - 6, text.x_label))
    parts.extend(_legend(left, 8, text.legend, (AREA_COLOUR, STATION_COLOUR), (False, True)))
    parts.append("</svg>")
    return Markup("".join(parts))


def periods_text(body: Mapping[str, Any]) -> str:
    """A profile's periods as the form writes them, with the unit: ``0 s: 16 A, ...``."""
    schedule = body.get("schedule") or {}
    unit = schedule.get("charging_rate_unit", "")
    periods = schedule.get("periods") or []
    shown = ", ".join(f"{p.get('start_period')} s: {p.get('limit')} {unit}" for p in periods[:20])
    return shown + (" …" if len(periods) > 20 else "")


# ---------------------------------------------------------------------------- the provider


def _quote(value: str) -> str:
    return quote(value, safe="")


class SmartWebProvider:
    """The smart charging pages; registered by :class:`smartcharge.extension.SmartExtension`."""

    name = "smart"
    title: ClassVar[dict[str, str]] = {"pt": "Carregamento inteligente", "en": "Smart charging"}
    templates = TEMPLATES

    def __init__(self, service: SmartService) -> None:
        self.service = service
        self.messages = MESSAGES
        self.nav = [NavEntry("/smart/sites", {"pt": "Instalações", "en": "Sites"}, True)]

    @property
    def ui(self) -> WebUI:
        return self.service.port.web

    @property
    def tz(self) -> str:
        return self.ui.settings.time_zone

    def routes(self) -> list[WebRoute]:
        return [
            WebRoute("GET", "/smart/sites", self.sites_page, access="admin"),
            WebRoute("POST", "/smart/sites", self.create_site, access="admin"),
            WebRoute("GET", "/smart/sites/{site_id}", self.site_page, access="admin"),
            WebRoute("POST", "/smart/sites/{site_id}/rules", self.save_rules, access="admin"),
            WebRoute("POST", "/smart/sites/{site_id}/limit", self.dynamic_limit, access="admin"),
            WebRoute("POST", "/smart/sites/{site_id}/members", self.save_members, access="admin"),
            WebRoute("POST", "/smart/sites/{site_id}/delete", self.delete_site, access="admin"),
            WebRoute("GET", "/smart/stations/{station_id}", self.station_page, access="admin"),
            WebRoute(
                "POST", "/smart/stations/{station_id}/profiles", self.add_profile, access="admin"
            ),
            WebRoute(
                "POST",
                "/smart/stations/{station_id}/profiles/{profile_id}/clear",
                self.clear_profile,
                access="admin",
            ),
        ]

    # ------------------------------------------------------------------ hooks

    async def station(self, request: web.Request, station_id: str) -> dict[str, Any]:
        """The panel on csms's station page (admins): its site and profiles, and the link."""
        session = self.ui.session_of(request)
        if session is None or not session.is_admin:
            return {}
        member = await self.service.store.member(station_id)
        profiles = await self.service.store.profiles(station_id)
        return {
            "station_id": station_id,
            "site": member["site_id"] if member else None,
            "priority": member["priority"] if member else None,
            "profiles": len(profiles),
            "problems": sum(1 for p in profiles if p["state"] in ("rejected", "failed")),
        }

    # ------------------------------------------------------------------ helpers

    def _flash(self, request: web.Request, text: str, ok: bool = True) -> None:
        session = self.ui.session_of(request)
        if session is not None:
            self.ui.flash(session, {"ok": ok, "text": text})

    def _pop_flash(self, request: web.Request) -> dict[str, Any] | None:
        return self.ui.pop_flash(self.ui.session_of(request))

    def _problem(self, e: Refused | FormError) -> dict[str, Any]:
        """What the page shows of a refusal: the message, and its details as lines."""
        if isinstance(e, FormError):
            return {
                "message": self.ui.t("smart.field", field=e.field, message=e.message),
                "details": [],
            }
        details: list[str] = []
        if isinstance(e.details, list):
            for d in e.details[:20]:
                if isinstance(d, dict) and "message" in d:
                    details.append(f"{d.get('field') or '—'}: {d['message']}")
                else:
                    details.append(str(d))
        elif e.details is not None:
            details.append(str(e.details))
        return {"message": e.message, "details": details}

    @staticmethod
    def _site_id(request: web.Request) -> str | None:
        sid = request.match_info["site_id"]
        return sid if ID_RE.fullmatch(sid) else None

    # ------------------------------------------------------------------ sites

    async def _sites_context(self) -> dict[str, Any]:
        items = []
        for s in await self.service.store.sites():
            view = await self.service.site_view(s["id"])
            if view is None:
                continue
            allocs = view["allocations"]
            items.append(
                {
                    **view,
                    "stations": len(view["members"]),
                    "transactions": sum(1 for a in allocs if a["transaction_id"] is not None),
                    "shares_sum": sum(a["limit_a"] for a in allocs),
                }
            )
        stations = [s.id for s in (await self.service.port.defined_stations())[:1000]]
        return {"items": items, "stations": stations}

    async def sites_page(
        self,
        request: web.Request,
        problem: dict[str, Any] | None = None,
        values: Mapping[str, Any] | None = None,
        status: int = 200,
    ) -> web.StreamResponse:
        return self.ui.render(
            request,
            "smart/sites.html",
            {
                "title": self.ui.t("smart.sites"),
                **await self._sites_context(),
                "problem": problem,
                "values": values or NEW_SITE | {"time_zone": self.tz},
                "picked": _all(values, "stations"),
                "flash": self._pop_flash(request),
            },
            status=status,
        )

    async def create_site(self, request: web.Request) -> web.StreamResponse:
        form = self.ui.form(request)
        try:
            site_id, body = parse_site_form(form, self.tz)
            if await self.service.store.site(site_id) is not None:
                raise Refused(
                    409, "exists", f"a site {site_id} exists already: change it on its page"
                )
            await self.service.put_site(site_id, body)
        except (Refused, FormError) as e:
            return await self.sites_page(request, self._problem(e), form, status=_status(e))
        self._flash(request, self.ui.t("smart.created", id=site_id))
        raise web.HTTPSeeOther(f"/smart/sites/{_quote(site_id)}")

    async def _site_context(self, request: web.Request, view: dict[str, Any]) -> dict[str, Any]:
        lang = _lang(self.ui, request)
        rules = SiteRules.model_validate(view["rules"])
        now = self.service.clock.now()
        dynamic = None
        if view.get("dynamic_limit") is not None:
            try:
                dynamic = Decimal(str(view["dynamic_limit"]))
            except InvalidOperation:
                dynamic = None
        until = from_db(view["dynamic_until"]) if view.get("dynamic_until") else None
        parts = limit_parts(rules, now, dynamic, until)
        chosen = request.query.get("range", DEFAULT_RANGE)
        chosen = chosen if chosen in RANGES else DEFAULT_RANGE
        since = now - RANGES[chosen]
        rows = await self.service.store.power(view["id"], since, now)
        kw = rules.voltage * rules.phases / 1000
        points = []
        for r in rows:
            minute = from_db(r["minute"])
            if minute is None or r["power_w"] is None:
                continue
            limit = None if r["limit_a"] is None else float(r["limit_a"]) * kw
            points.append(PowerPoint(minute, float(r["power_w"]) / 1000, limit))
        chart = None
        peak = max((p.power_kw for p in points), default=None)
        if points:
            zone = web_fmt.zone_label(self.tz, lang, now)
            chart = power_chart(
                points,
                since,
                now,
                chart_id="site-power",
                text=ChartText(
                    title=self.ui.t("smart.power_title", site=view["name"]),
                    desc=self.ui.t(
                        "smart.power_desc",
                        n=len(points),
                        start=_plain_time(since, self.tz),
                        end=_plain_time(now, self.tz),
                        peak=web_fmt.number(peak, lang, 1),
                        limit=web_fmt.number(view["limit_kw"], lang, 1),
                    ),
                    y_label=self.ui.t("smart.power_axis"),
                    x_label=self.ui.t("smart.time_axis", zone=zone),
                    legend=(self.ui.t("smart.legend_power"), self.ui.t("smart.legend_limit")),
                ),
                tz_name=self.tz,
                lang=lang,
            )
        return {
            "title": f"{self.ui.t('smart.site')} {view['name']}",
            "site": view,
            "rules": rules,
            "parts": parts,
            "ranges": list(RANGES),
            "range": chosen,
            "chart": chart,
            "minutes": len(points),
            "peak": peak,
            "tz": self.tz,
            "zone": web_fmt.zone_label(self.tz, lang, now),
            "windows_text": "; ".join(f"{w.start}-{w.end}={w.limit}" for w in rules.windows),
            "flash": self._pop_flash(request),
        }

    async def site_page(
        self,
        request: web.Request,
        problem: dict[str, Any] | None = None,
        status: int = 200,
    ) -> web.StreamResponse:
        site_id = self._site_id(request)
        view = await self.service.site_view(site_id) if site_id else None
        if view is None:
            return self.ui.error(request, 404, "error.not_found")
        ctx = await self._site_context(request, view)
        ctx["problem"] = problem
        return self.ui.render(request, "smart/site.html", ctx, status=status)

    async def _site_or_404(self, request: web.Request) -> dict[str, Any] | None:
        site_id = self._site_id(request)
        return await self.service.site_view(site_id) if site_id else None

    def _back(self, site_id: str, anchor: str = "") -> web.HTTPSeeOther:
        return web.HTTPSeeOther(f"/smart/sites/{_quote(site_id)}{anchor}")

    async def save_rules(self, request: web.Request) -> web.StreamResponse:
        view = await self._site_or_404(request)
        if view is None:
            return self.ui.error(request, 404, "error.not_found")
        form = self.ui.form(request)
        try:
            body = {
                "name": _field(form, "name", 200) or view["name"],
                "rules": parse_rules(form, view["rules"].get("time_zone") or self.tz),
                "members": view["members"],
            }
            await self.service.put_site(view["id"], body)
        except (Refused, FormError) as e:
            return await self.site_page(request, self._problem(e), _status(e))
        self._flash(request, self.ui.t("smart.saved", id=view["id"]))
        raise self._back(view["id"])

    async def dynamic_limit(self, request: web.Request) -> web.StreamResponse:
        view = await self._site_or_404(request)
        if view is None:
            return self.ui.error(request, 404, "error.not_found")
        form = self.ui.form(request)
        try:
            if _field(form, "action") == "clear":
                await self.service.set_dynamic_limit(view["id"], None, None)
                done = self.ui.t("smart.limit_cleared")
            else:
                limit, until = parse_dynamic_form(form, self.tz)
                if until is not None and until <= self.service.clock.now():
                    raise FormError("until", "a time in the future")
                await self.service.set_dynamic_limit(view["id"], limit, until)
                done = self.ui.t("smart.limit_set")
        except (Refused, FormError) as e:
            return await self.site_page(request, self._problem(e), _status(e))
        self._flash(request, done)
        raise self._back(view["id"], "#limit-now")

    async def save_members(self, request: web.Request) -> web.StreamResponse:
        view = await self._site_or_404(request)
        if view is None:
            return self.ui.error(request, 404, "error.not_found")
        form = self.ui.form(request)
        try:
            members = parse_members_form(form, view["members"])
            await self.service.put_site(
                view["id"], {"name": view["name"], "rules": view["rules"], "members": members}
            )
        except (Refused, FormError) as e:
            return await self.site_page(request, self._problem(e), _status(e))
        self._flash(request, self.ui.t("smart.saved", id=view["id"]))
        raise self._back(view["id"], "#members")

    async def delete_site(self, request: web.Request) -> web.StreamResponse:
        view = await self._site_or_404(request)
        if view is None:
            return self.ui.error(request, 404, "error.not_found")
        if _field(self.ui.form(request), "confirm") != "1":
            return await self.site_page(
                request,
                {"message": self.ui.t("smart.delete_confirm"), "details": []},
                422,
            )
        try:
            await self.service.delete_site(view["id"])
        except Refused as e:
            return await self.site_page(request, self._problem(e), _status(e))
        self._flash(request, self.ui.t("smart.deleted", id=view["id"]))
        raise web.HTTPSeeOther("/smart/sites")

    # ------------------------------------------------------------------ stations

    async def station_page(
        self,
        request: web.Request,
        problem: dict[str, Any] | None = None,
        values: Mapping[str, Any] | None = None,
        status: int = 200,
    ) -> web.StreamResponse:
        sid = request.match_info["station_id"]
        station = await self.service.port.station(sid) if ID_RE.fullmatch(sid) else None
        if station is None:
            return self.ui.error(request, 404, "error.no_station", station=sid[:64])
        lang = _lang(self.ui, request)
        rows = await self.service.store.profiles(sid)
        profiles = [
            {
                **r,
                "periods": periods_text(r["body"]),
                "kind": r["body"].get("kind"),
                "unit": (r["body"].get("schedule") or {}).get("charging_rate_unit"),
            }
            for r in rows
        ]
        found = await self.service.store.member(sid)
        member = [found] if found else []
        connectors = sorted(
            {int(e["connector_id"]) for e in station.evses if not e.get("removed_at")}
            | {c.connector_id for c in station.connectors if c.connector_id > 0}
        ) or [1]
        composite = None
        q = request.query
        if "connector" in q:
            composite = await self._composite(sid, q, lang)
        used = {int(r["profile_id"]) for r in rows if int(r["profile_id"]) <= OPERATOR_MAX_ID}
        next_id = next(i for i in range(1, len(used) + 2) if i not in used)
        caps = await self.service.capabilities(sid)
        return self.ui.render(
            request,
            "smart/profiles.html",
            {
                "title": self.ui.t("smart.profiles_of", station=sid),
                "station": station,
                "connected": self.service.port.is_connected(sid),
                "profiles": profiles,
                "member": member[0] if member else None,
                "connectors": connectors,
                "composite": composite,
                "durations": DURATIONS,
                "next_id": next_id,
                "caps": caps,
                "problem": problem,
                "values": values
                or {
                    "purpose": "TxDefaultProfile",
                    "kind": "Relative",
                    "unit": sorted(caps.units)[0],
                    "stack_level": "0",
                    "connector_id": "0",
                },
                "tz": self.tz,
                "zone": web_fmt.zone_label(self.tz, lang, self.service.clock.now()),
                "flash": self._pop_flash(request),
            },
            status=status,
        )

    async def _composite(self, sid: str, q: Mapping[str, str], lang: str) -> dict[str, Any]:
        """The composite schedule asked for by the page's query (the station is called: only
        when the operator asks, never on a plain page view)."""
        try:
            connector = parse_int(q.get("connector", "0"), "connector", 0, 100)
            duration = parse_int(q.get("duration", "86400"), "duration", 60, 7 * 86400)
            unit = q.get("unit", "A")
            if unit not in ("A", "W"):
                raise FormError("unit", "A or W")
        except FormError as e:
            return {"problem": self._problem(e)}
        try:
            out = await self.service.composite_schedule(sid, connector, duration, unit)
        except Refused as e:
            return {"problem": self._problem(e)}
        start = web_fmt.as_datetime(out["start"]) or self.service.clock.now()
        expected = [(int(p["start_period"]), p["limit"]) for p in out["expected"]]
        theirs = station_periods(out.get("station"), start)
        answer = out.get("station")
        status = answer.get("status") if isinstance(answer, dict) else None

        def says(series: Steps | None) -> str:
            if series is None:
                return "—"
            none = self.ui.t("smart.no_limit")
            shown = [
                f"{_duration(o)}: "
                + (none if v is None else f"{web_fmt.number(v, lang, 1)} {unit}")
                for o, v in series[:6]
            ]
            return ", ".join(shown) + (" …" if len(series) > 6 else "")

        chart = schedule_chart(
            expected,
            theirs,
            start,
            duration,
            unit=unit,
            chart_id="composite-chart",
            text=ChartText(
                title=self.ui.t("smart.composite_title", station=sid, connector=connector),
                desc=self.ui.t(
                    "smart.composite_desc", expected=says(expected), station=says(theirs)
                ),
                y_label=self.ui.t("smart.limit_axis", unit=unit),
                x_label=self.ui.t("smart.time_axis", zone=web_fmt.zone_label(self.tz, lang, start)),
                legend=(self.ui.t("smart.expected"), self.ui.t("smart.station_says")),
            ),
            tz_name=self.tz,
            lang=lang,
        )
        return {
            "connector": connector,
            "duration": duration,
            "unit": unit,
            "start": start,
            "chart": chart,
            "matches": out.get("matches"),
            "station_error": out.get("station_error"),
            "station_status": status,
            "expected_text": says(expected),
            "station_text": says(theirs),
            "expected": expected,
            "station": theirs,
        }

    async def add_profile(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["station_id"]
        if not ID_RE.fullmatch(sid) or await self.service.port.station(sid) is None:
            return self.ui.error(request, 404, "error.no_station", station=sid[:64])
        form = self.ui.form(request)
        rows = await self.service.store.profiles(sid)
        used = {int(r["profile_id"]) for r in rows}
        next_id = next(i for i in range(1, len(used) + 2) if i not in used)
        try:
            connector, body = parse_profile_form(form, self.tz, next_id)
            row = await self.service.set_profile(sid, connector, body)
        except (Refused, FormError) as e:
            return await self.station_page(request, self._problem(e), form, _status(e))
        state = row["state"] + (f" ({row['last_error']})" if row.get("last_error") else "")
        self._flash(
            request,
            self.ui.t("smart.profile_added", id=row["profile_id"], state=state),
            ok=row["state"] in ("installed", "pending"),
        )
        raise web.HTTPSeeOther(
            f"/smart/stations/{_quote(sid)}?connector={connector}&unit="
            f"{body['schedule']['charging_rate_unit']}#composite"
        )

    async def clear_profile(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["station_id"]
        text = request.match_info["profile_id"]
        if not ID_RE.fullmatch(sid) or not (text.isascii() and text.isdigit() and len(text) < 10):
            return self.ui.error(request, 404, "error.not_found")
        try:
            out = await self.service.clear_profile(sid, int(text))
        except Refused as e:
            return await self.station_page(request, self._problem(e), None, _status(e))
        self._flash(request, self.ui.t("smart.cleared", id=text, answer=out.get("station")))
        raise web.HTTPSeeOther(f"/smart/stations/{_quote(sid)}")


def _all(values: Any, name: str) -> list[str]:
    """Every value of a repeated form field (a multi-select) of a posted form."""
    getall = getattr(values, "getall", None)
    if getall is None:
        return []
    return [v for v in getall(name, []) if isinstance(v, str)]


def _status(e: Refused | FormError) -> int:
    """The page's status for a refusal: the service's (404, 409, 422), 422 for a field."""
    if isinstance(e, Refused) and 400 <= e.status < 500:
        return e.status
    return 422


def _lang(ui: WebUI, request: web.Request) -> str:
    return "en" if ui.language(request) == "en" else "pt"


def _plain_time(at: datetime, tz_name: str) -> str:
    return at.astimezone(web_fmt.zone(tz_name)).strftime("%Y-%m-%d %H:%M")


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


__all__ = [
    "FormError",
    "LimitPart",
    "PowerPoint",
    "SmartWebProvider",
    "limit_parts",
    "parse_periods",
    "parse_profile_form",
    "parse_site_form",
    "power_chart",
    "schedule_chart",
    "station_periods",
]
