"""OCPP 1.6J charge point simulator: a library for tests and the ``charger-sim`` CLI.

>>> st = Station("SIM-001", url="ws://127.0.0.1:9000/ocpp", connectors=2)
>>> await st.connect(); await st.boot_and_report()

See :class:`Station` for the API and :class:`Behaviour` for how the station answers.
"""

from charger_sim.behaviour import Behaviour
from charger_sim.config import CORE_KEYS, ConfigurationStore
from charger_sim.costdisplay import CostMessage
from charger_sim.errors import (
    IGNORE,
    CallErrorReceived,
    CallErrorReply,
    ConnectionLostError,
    InvalidResponseError,
    NotConnectedError,
    SimulatorError,
    SubprotocolError,
)
from charger_sim.station import ConnectorState, Station, StationStats

__all__ = [
    "CORE_KEYS",
    "IGNORE",
    "Behaviour",
    "CallErrorReceived",
    "CallErrorReply",
    "ConfigurationStore",
    "ConnectionLostError",
    "ConnectorState",
    "CostMessage",
    "InvalidResponseError",
    "NotConnectedError",
    "SimulatorError",
    "Station",
    "StationStats",
    "SubprotocolError",
]
