"""Prometheus metrics, in a registry of their own per central system (tests run several).

``GET /metrics`` can require a token (:func:`metrics_handler`): the top-level setting
``metrics_token``, from the environment ``CSMS_METRICS_TOKEN``. The scraper sends it as
``Authorization: Bearer TOKEN``, or as the password of HTTP Basic (any user name), which
is what Prometheus' ``basic_auth`` and ``authorization`` scrape options send. Without a
token the endpoint stays open, as before: then keep it off the public network.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

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
        self.tls_handshakes_failed = Counter(
            "csms_tls_handshakes_failed",
            "TLS handshakes that failed, by listener (ocpp, http) and reason (csms.tls)",
            ["listener", "reason"],
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


def metrics_authorized(authorization: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header opens ``/metrics``: always without a token;
    otherwise ``Bearer TOKEN`` or HTTP Basic with TOKEN as the password (any user name)."""
    if not token:
        return True
    if not authorization:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        offered = credentials
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        offered = decoded.partition(":")[2]
    else:
        return False
    return hmac.compare_digest(offered.encode("utf-8", "replace"), token.encode("utf-8"))


def metrics_handler(
    registry: CollectorRegistry,
    token: str | None = None,
    more: Callable[[], Awaitable[bytes]] | None = None,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``GET /metrics`` handler, closed by ``token`` when one is set (401 otherwise);
    ``more`` gives text appended to ours (the delivery process's metrics)."""

    async def metrics(request: web.Request) -> web.Response:
        if not metrics_authorized(request.headers.get("Authorization"), token):
            resp = web.json_response(
                {"status": "error", "error": "unauthorized", "message": "metrics token required"},
                status=401,
            )
            resp.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return resp
        body = generate_latest(registry)
        if more is not None:
            body += await more()
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    return metrics
