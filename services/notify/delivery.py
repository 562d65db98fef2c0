"""Sending queued notifications: email over SMTP, SMS through a provider's HTTP API, platform webhooks.

Each row is claimed under a lease, sent, then marked sent; a failure is retried
with exponential backoff up to `max_attempts`. A sender that dies between the
provider accepting a message and the row being marked sent leaves the row
`sending`; once its lease runs out it is sent again with the SAME identity
(email Message-ID, SMS Idempotency-Key, webhook id), all derived from
(refund, milestone), so a provider or platform that dedupes on it delivers it once.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib
import asyncpg
import httpx
import orjson
import structlog
from prometheus_client import Counter
from standardwebhooks.webhooks import Webhook

from services.notify import domain, store
from services.notify.messages import Message, render_message
from shared.runtime.metrics import observe_completion

log = structlog.get_logger()

NOTIFICATIONS_SENT = Counter(
    "refund_notifications_total", "Notifications by channel, milestone and final outcome",
    ["channel", "milestone", "outcome"])
SEND_FAILURES = Counter("refund_notification_send_failures_total", "Failed send attempts", ["channel"])


class PermanentFailure(Exception):
    """The provider refused the message for good (e.g. SMTP 5xx, HTTP 4xx): no retry helps."""


class Channel(Protocol):
    """A way to reach a customer or platform (the port; SMTP, SMS-over-HTTP and webhooks adapt it).

    `send` returns once the provider has accepted the message, raises PermanentFailure
    when no retry can help, and anything else for a failure worth retrying. `message` is
    what the customer reads; None for a webhook, whose body is the refund's status.
    """

    async def send(self, row: asyncpg.Record, message: Message | None) -> None: ...


def notification_key(row: asyncpg.Record) -> str:
    """The identity every send of one notification shares (a milestone again under a later payout
    attempt is another notification: `<milestone>_<attempt>`)."""
    attempt = row.get("attempt", 1) or 1
    milestone = row["milestone"] if attempt == 1 else f"{row['milestone']}_{attempt}"
    return f"{row['refund_id']}.{milestone}.{row['channel']}"


@dataclass(frozen=True)
class EmailChannel:
    """Email over SMTP (aiosmtplib)."""

    host: str
    port: int
    sender: str
    message_id_domain: str
    username: str | None = None
    password: str | None = None
    start_tls: bool = False
    timeout: float = 30.0

    async def send(self, row: asyncpg.Record, message: Message) -> None:
        email = EmailMessage()
        email["From"], email["To"], email["Subject"] = self.sender, row["recipient"], message.subject
        email["Date"] = formatdate(usegmt=True)
        email["Message-ID"] = f"<{notification_key(row)}@{self.message_id_domain}>"
        if message.link:
            # One-click unsubscribe (RFC 8058): mail clients POST to it.
            email["List-Unsubscribe"] = f"<{message.link}/opt-out>"
            email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        email.set_content(message.text)
        email["Content-Language"] = row["locale"]  # after set_content, which resets Content-* headers
        try:
            await aiosmtplib.send(email, hostname=self.host, port=self.port, username=self.username,
                                  password=self.password, start_tls=self.start_tls, timeout=self.timeout)
        except aiosmtplib.SMTPResponseException as error:
            if 500 <= error.code < 600:
                raise PermanentFailure(f"SMTP {error.code} {error.message}") from error
            raise


def _raise_for(response: httpx.Response) -> None:
    if response.status_code == 429 or response.status_code >= 500:
        response.raise_for_status()
    if response.status_code >= 400:
        raise PermanentFailure(f"HTTP {response.status_code}: {response.text[:300]}")


@dataclass(frozen=True)
class SmsChannel:
    """SMS through a provider's HTTP API: POST {to, body, reference} with an Idempotency-Key."""

    http: httpx.AsyncClient
    url: str
    token: str

    async def send(self, row: asyncpg.Record, message: Message) -> None:
        response = await self.http.post(
            self.url, json={"to": row["recipient"], "body": message.text, "reference": notification_key(row)},
            headers={"Authorization": f"Bearer {self.token}", "Idempotency-Key": notification_key(row)})
        _raise_for(response)


def standard_webhook(secret: str) -> Webhook:
    """The Standard Webhooks signer for a secret: `whsec_<base64>` as the spec gives them to platforms;
    any other string is used as the raw key (a platform then verifies with `Webhook(secret.encode())`)."""
    return Webhook(secret if secret.startswith("whsec_") else secret.encode())


@dataclass(frozen=True)
class WebhookChannel:
    """Platform webhooks signed per the Standard Webhooks spec (`webhook-id`, `webhook-timestamp`,
    `webhook-signature`), so a platform verifies them with the `standardwebhooks` library."""

    http: httpx.AsyncClient
    secret: str
    # A platform's own secret, where it has one; `secret` otherwise.
    secrets: dict[str, str] = field(default_factory=dict)
    clock: Callable[[], float] = time.time

    async def send(self, row: asyncpg.Record, message: Message | None) -> None:
        context = row["context"]
        body = orjson.dumps({
            "id": notification_key(row), "type": f"refund.{row['milestone']}", "refund_id": row["refund_id"],
            "source": row["source"], "order_id": row["order_id"], "status": context["status"],
            "amount": row["amount"], "eta": context["eta"], "reason_codes": context["reason_codes"],
            # As on refunds.status: a webhook whose sequence is not above the last one applied is stale.
            "sequence": context.get("sequence")})
        webhook_id, sent_at = notification_key(row), datetime.fromtimestamp(int(self.clock()), UTC)
        signature = standard_webhook(self.secrets.get(row["source"], self.secret)).sign(
            webhook_id, sent_at, body.decode())
        response = await self.http.post(row["recipient"], content=body, headers={
            "Content-Type": "application/json", "webhook-id": webhook_id,
            "webhook-timestamp": str(int(sent_at.timestamp())), "webhook-signature": signature})
        _raise_for(response)


@dataclass
class Sender:
    """Drains the notification queue."""

    pool: asyncpg.Pool
    channels: dict[str, Channel]
    link_for: Callable[[str], str]
    feedback_url: str | None
    max_attempts: int = 8
    backoff_base_seconds: float = 2.0
    backoff_cap_seconds: float = 600.0
    lease_seconds: float = 60.0
    poll_interval_seconds: float = 0.5
    # From milestone to the message being out; measured as notify's stage duration.
    sla_seconds: float = 300.0
    batch: int = 20

    async def run_forever(self) -> None:
        while True:
            try:
                rows = await store.claim_due(self.pool, self.batch, self.lease_seconds)
                outcomes = await asyncio.gather(*(self._deliver(row) for row in rows), return_exceptions=True)
                for row, outcome in zip(rows, outcomes, strict=True):
                    if isinstance(outcome, Exception):  # e.g. the database went away: the lease brings it back
                        log.error("notification_unsettled", id=row["id"], error=repr(outcome))
            except Exception:
                log.exception("notification_round_failed")
                rows = []
            if not rows:
                await asyncio.sleep(self.poll_interval_seconds)

    async def _deliver(self, row: asyncpg.Record) -> None:
        to_customer = row["channel"] != "webhook"
        if to_customer and row["opted_out"]:
            await self._settle(row, "skipped", "customer opted out")
            return
        try:
            await self.channels[row["channel"]].send(row, self._message(row) if to_customer else None)
        except PermanentFailure as error:
            SEND_FAILURES.labels(row["channel"]).inc()
            await self._settle(row, "failed", str(error))
        except Exception as error:
            SEND_FAILURES.labels(row["channel"]).inc()
            reason = f"{type(error).__name__}: {error}"
            if row["attempts"] >= self.max_attempts:
                await self._settle(row, "failed", reason)
                return
            delay = domain.retry_delay_seconds(row["attempts"], self.backoff_base_seconds, self.backoff_cap_seconds)
            log.warning("notification_retry", id=row["id"], channel=row["channel"], delay=delay,
                        error=_without_recipient(reason, row))
            await store.retry_at(self.pool, row["id"], datetime.now(UTC) + timedelta(seconds=delay), reason)
        else:
            await self._settle(row, "sent")

    def _message(self, row: asyncpg.Record) -> Message:
        context = row["context"]
        return render_message(row["channel"], row["locale"], row["milestone"], order_id=row["order_id"] or "",
                              amount=row["amount"], eta=domain.instant(context["eta"]),
                              reason_codes=context["reason_codes"],
                              link=(link := self.link_for(row["refund_id"])),
                              feedback_url=self.feedback_url or f"{link}#feedback")

    async def _settle(self, row: asyncpg.Record, state: str, error: str | None = None) -> None:
        await store.settle(self.pool, row["id"], state, error)
        NOTIFICATIONS_SENT.labels(row["channel"], row["milestone"], state).inc()
        took = (datetime.now(UTC) - row["created_at"]).total_seconds()
        observe_completion("notify", state, row["payment_channel"] or "unknown", took, took > self.sla_seconds)
        log.info("notification_" + state, refund_id=row["refund_id"], milestone=row["milestone"],
                 channel=row["channel"], attempts=row["attempts"], error=_without_recipient(error, row))


def _without_recipient(error: str | None, row: asyncpg.Record) -> str | None:
    """A provider's error text for the log: it may quote the address (`<ana@…>: recipient rejected`),
    which notify keeps in its table but no log line carries."""
    return error.replace(row["recipient"], "<recipient>") if error and row["recipient"] else error

