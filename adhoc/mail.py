"""Receipts by e-mail to drivers who gave an address, through the SMTP server of csms's
alerts (``[alerts] smtp_*``): STARTTLS verified with ``tls.ca_file``, login when set.
Each receipt is sent once; a failure is kept on the receipt (shown to the operator)."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from typing import TYPE_CHECKING

import structlog

from csms.ports import client_context

from .receipts import build_email
from .receipts_data import to_receipt

if TYPE_CHECKING:
    from .service import AdhocService

log = structlog.get_logger("adhoc.mail")


def _send(settings: object, mail: EmailMessage) -> None:
    s = settings
    with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout) as smtp:  # type: ignore[attr-defined]
        if s.smtp_starttls:  # type: ignore[attr-defined]
            smtp.starttls(context=client_context())
        if s.smtp_user:  # type: ignore[attr-defined]
            secret = s.smtp_password  # type: ignore[attr-defined]
            smtp.login(s.smtp_user, secret.get_secret_value() if secret else "")  # type: ignore[attr-defined]
        smtp.send_message(mail)


async def send_receipts(service: AdhocService) -> int:
    """Send the receipts waiting for their e-mail; how many went."""
    alerts = service.port.settings.alerts
    sent = 0
    for r in await service.store.receipts_to_mail():
        now = service.clock.now()
        if not alerts.smtp_host or not alerts.smtp_from:
            await service.store.mailed(r["number"], now, "no SMTP server configured")
            continue
        try:
            mail = build_email(
                to_receipt(r["body"]),
                sender=alerts.smtp_from,
                to=r["email"],
                site_url=f"{service.public_url}/charge/s/{r['payment_id']}",
            )
            await asyncio.to_thread(_send, alerts, mail)
        except (OSError, ValueError, smtplib.SMTPException) as e:
            log.warning("receipt e-mail failed", receipt=r["number"], error=type(e).__name__)
            await service.store.mailed(r["number"], now, f"{type(e).__name__}: {e}"[:300])
            continue
        await service.store.mailed(r["number"], now, None)
        log.info("receipt e-mailed", receipt=r["number"])
        sent += 1
    return sent
