"""Prometheus metrics, in a registry of their own per central system (tests run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# the *_created series only add noise to every scrape
disable_created_metrics()

ANSWER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.stations_connected = Gauge(
            "csms_stations_connected", "Stations with an open OCPP connection", registry=r
        )
        self.frames_received = Counter(
            "csms_ocpp_frames_received",
            "OCPP frames received, by action (CallResult, CallError, invalid for non-calls)",
            ["action"],
            registry=r,
        )
        self.answer_seconds = Histogram(
            "csms_ocpp_answer_seconds",
            "Time from a request's arrival to our answer being sent",
            ["action"],
            buckets=ANSWER_BUCKETS,
            registry=r,
        )
        self.call_errors_sent = Counter(
            "csms_ocpp_call_errors_sent",
            "CallErrors we answered, by action and error code",
            ["action", "code"],
            registry=r,
        )
        self.handshakes_refused = Counter(
            "csms_ocpp_handshakes_refused",
            "Websocket handshakes refused, by reason",
            ["reason"],
            registry=r,
        )
        self.calls_sent = Counter(
            "csms_ocpp_calls_sent",
            "Requests we sent to stations, by action and outcome",
            ["action", "outcome"],
            registry=r,
        )
        self.store_commits = Gauge(
            "csms_store_commits", "Database commits since start (one per batch)", registry=r
        )
        self.store_jobs = Gauge(
            "csms_store_write_jobs", "Write jobs committed since start", registry=r
        )
