"""csms's repositories, one per aggregate; :class:`csms.store.Store` holds one of each.

Each repository holds its aggregate's SQL (portable: SQLite and PostgreSQL, see
:mod:`csms.db`), reads committed data through the database and writes through its one
group-commit writer, so a caller is answered only after the commit. A message that touches
several aggregates is still one job (a transaction's anomalies are written by the
transaction's job, with the functions of :mod:`.anomalies`).

- :mod:`.stations`: definitions, boot information, configuration checks, last seen;
- :mod:`.status`: each connector's latest status and the status log;
- :mod:`.connections`: when stations connected and disconnected (the connection log);
- :mod:`.transactions`: transactions and their meter values;
- :mod:`.anomalies`: what stations sent that could not be stored as a plain fact;
- :mod:`.id_tags`: the local authorization list;
- :mod:`.unknown_stations`: ids that tried to connect without being defined;
- :mod:`.commands`: the OCPP calls sent to stations;
- :mod:`.data_transfers`: the DataTransfer requests stations sent;
- :mod:`.security`: the security extension's events, certificate requests, station
  certificates, and the GetLog / signed firmware requests with their statuses.
"""

from __future__ import annotations

from .anomalies import AnomalyRepository
from .commands import CommandRepository
from .data_transfers import DataTransferRepository
from .id_tags import IdTagRepository
from .security import SecurityRepository
from .stations import StationRepository
from .status import StatusRepository
from .transactions import (
    MeterResult,
    StartResult,
    StopResult,
    TransactionRepository,
)
from .unknown_stations import UnknownStationRepository

__all__ = [
    "AnomalyRepository",
    "CommandRepository",
    "DataTransferRepository",
    "IdTagRepository",
    "MeterResult",
    "SecurityRepository",
    "StartResult",
    "StationRepository",
    "StatusRepository",
    "StopResult",
    "TransactionRepository",
    "UnknownStationRepository",
]
