"""Secrets that never leave the process: the values of secret configuration keys.

A station's ``AuthorizationKey`` (the Basic password of OCPP security profiles 1 and 2) is
set with ChangeConfiguration; other vendors have their own secret keys (``...Password``,
``...Secret``, ``...Token``, private keys). Such a value is replaced by :data:`MASK`
wherever csms keeps or shows what it sent or received: the recent frames of the web
interface (:mod:`csms.traffic`), the command records of ``/api/v1/commands`` and the logs.
The station itself still receives the real value: only copies are redacted.
"""

from __future__ import annotations

import json
import re
from typing import Any

MASK = "***"

_SECRET_KEY = re.compile(
    r"authorizationkey|password|passwd|passphrase|secret|token|privatekey|private_key|"
    r"credential|apikey|api_key",
    re.IGNORECASE,
)
# the requests and answers that carry configuration keys and their values
_ACTIONS = frozenset({"ChangeConfiguration", "GetConfiguration"})


def is_secret_key(key: object) -> bool:
    """Whether a configuration key's value is a secret (by its name)."""
    return isinstance(key, str) and _SECRET_KEY.search(key) is not None


def has_secrets(action: str | None) -> bool:
    """Whether frames of ``action`` may carry a secret value."""
    return action in _ACTIONS


def redact_payload(action: str | None, payload: Any) -> Any:
    """A copy of ``payload`` (a request or an answer of ``action``) with secret values masked;
    ``payload`` itself when there is nothing to mask."""
    if action not in _ACTIONS or not isinstance(payload, dict):
        return payload
    if action == "ChangeConfiguration" and is_secret_key(payload.get("key")):
        if "value" in payload:
            return {**payload, "value": MASK}
        return payload
    entries = payload.get("configurationKey")  # GetConfiguration's answer
    if isinstance(entries, list) and any(
        isinstance(e, dict) and is_secret_key(e.get("key")) and "value" in e for e in entries
    ):
        return {
            **payload,
            "configurationKey": [
                {**e, "value": MASK}
                if isinstance(e, dict) and is_secret_key(e.get("key")) and "value" in e
                else e
                for e in entries
            ],
        }
    return payload


def redact_frame(text: str, action: str | None) -> str:
    """An OCPP-J frame's text with the secret values of its payload masked (the frame
    itself when it carries none or cannot be read)."""
    if action not in _ACTIONS or not _might_hold_secret(text):
        return text
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        return text
    if not isinstance(msg, list) or len(msg) < 3:
        return text
    index = 3 if msg[0] == 2 and len(msg) == 4 else 2
    redacted = redact_payload(action, msg[index])
    if redacted is msg[index]:
        return text
    msg[index] = redacted
    # ASCII: whatever escapes the frame had (lone surrogates too) stay escapes
    return json.dumps(msg, separators=(",", ":"))


def _might_hold_secret(text: str) -> bool:
    return _SECRET_KEY.search(text) is not None
