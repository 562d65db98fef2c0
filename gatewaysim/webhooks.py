"""Webhooks: written to a durable outbox with the change they announce, sent until a 2xx.

What each change announces:

| change (ledger)            | Stripe-shaped               | Adyen-shaped                          |
|----------------------------|-----------------------------|---------------------------------------|
| created `succeeded`        | (the answer says it)        | REFUND success=true                   |
| created `failed`           | (the answer says it)        | REFUND success=false, reason          |
| `pending` -> `succeeded`   | `charge.refund.updated`     | REFUND success=true                   |
| `succeeded` -> `reversed`  | `refund.failed`             | REFUNDED_REVERSED success=true        |

Signatures are made when sending, with the account's secret: Stripe's
`Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` (a fresh
`t` per attempt, as Stripe does); Adyen's HMAC of the notification item in
`additionalData.hmacSignature` (`Adyen.util.generate_notification_sig`).
Attempt n failing waits `retry_base * 2**(n-1)` before the next, up to
`max_attempts`; then the event is given up (kept, `next_attempt_at` NULL).
"""

import asyncio
import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import asyncpg
import orjson
import structlog
from Adyen.util import generate_notification_sig
from prometheus_client import Counter

from gatewaysim import objects
from gatewaysim.settings import Account
from shared.runtime.http_client import HTTP_ERRORS, LazySession

log = structlog.get_logger()
DELIVERIES = Counter("gatewaysim_webhook_deliveries_total", "Webhook delivery attempts by their result",
                     ["account", "result"])
_LEASE_SECONDS = 60  # a claimed event is not claimed again while its send may still be under way


def _event(row: Mapping, change: str) -> tuple[str, str, dict] | None:
    now = datetime.now(UTC)
    if row["personality"] == "stripe":
        event_type = {"confirmed": "charge.refund.updated", "reversed": "refund.failed"}.get(change)
        return (event_type, *objects.stripe_event(row, event_type, now)) if event_type else None
    if row["personality"] == "adyen":
        if change == "reversed":
            return ("REFUNDED_REVERSED", *objects.adyen_notification(row, "REFUNDED_REVERSED", True, None, now))
        if row["status"] in ("succeeded", "failed"):  # created with an outcome, or confirmed
            success = row["status"] == "succeeded"
            return ("REFUND", *objects.adyen_notification(row, "REFUND", success, row["failure_reason"], now))
    return None  # made in process (no personality), or nothing to announce


async def announce(conn: asyncpg.Connection, row: Mapping, change: str) -> None:
    """Write the webhook for this change of a refund (created | confirmed | reversed), if it has one."""
    event = _event(row, change)
    if event is None:
        return
    event_type, event_id, body = event
    await conn.execute(
        "INSERT INTO gateway_sim.webhook_outbox (account, event_id, event_type, body) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (account, event_id) DO NOTHING", row["account"], event_id, event_type,
        orjson.dumps(body).decode())


def stripe_signature(secret: str, body: bytes, at: int) -> str:
    signed = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={signed}"


def signed_request(account: Account, body: str) -> tuple[bytes, dict[str, str]]:
    """The bytes to send and their headers, signed the account's personality's way."""
    headers = {"Content-Type": "application/json", "User-Agent": "gatewaysim"}
    if account.personality == "stripe":
        raw = body.encode()
        headers["Stripe-Signature"] = stripe_signature(account.webhook_secret, raw, int(time.time()))
        return raw, headers
    notification = orjson.loads(body)
    for entry in notification["notificationItems"]:
        item = entry["NotificationRequestItem"]
        item["additionalData"] = {"hmacSignature": generate_notification_sig(item, account.webhook_secret).decode()}
    return orjson.dumps(notification), headers


class WebhookSender:
    """Sends due outbox events to their account's webhook_url."""

    def __init__(self, pool: asyncpg.Pool, accounts: Mapping[str, Account], *, max_attempts: int,
                 retry_base_seconds: float, timeout_seconds: float) -> None:
        self.pool, self.accounts = pool, accounts
        self.max_attempts, self.retry_base = max_attempts, retry_base_seconds
        self.targets = [name for name, account in accounts.items() if account.webhook_url]
        self.http = LazySession(timeout_seconds)  # one keep-alive session, opened inside the running loop

    async def close(self) -> None:
        await self.http.close()

    async def send_due(self, limit: int = 50) -> int:
        """One round: claim the due events (oldest first), send them at once, record each result."""
        if not self.targets:
            return 0
        due = await self.pool.fetch(
            "UPDATE gateway_sim.webhook_outbox SET next_attempt_at = now() + make_interval(secs => $3) "
            "WHERE id IN (SELECT id FROM gateway_sim.webhook_outbox WHERE next_attempt_at <= now() "
            "  AND account = ANY($1) ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) "
            "RETURNING id, account, event_id, body, attempts", self.targets, limit, _LEASE_SECONDS)
        results = await asyncio.gather(*(self._send(row) for row in sorted(due, key=lambda r: r["id"])))
        delivered = [(row["id"], row["attempts"] + 1) for row, error in results if error is None]
        if delivered:  # one statement for the round's deliveries; a failure is rare and written on its own
            await self.pool.execute(
                "UPDATE gateway_sim.webhook_outbox o SET attempts = d.attempts, delivered_at = now(), "
                "next_attempt_at = NULL, last_error = NULL "
                "FROM unnest($1::bigint[], $2::int[]) AS d(id, attempts) WHERE o.id = d.id",
                [row_id for row_id, _ in delivered], [attempts for _, attempts in delivered])
        for row, error in results:
            if error is not None:
                await self._failed(row, error)
            DELIVERIES.labels(row["account"], "delivered" if error is None else
                              ("given_up" if row["attempts"] + 1 >= self.max_attempts else "failed")).inc()
        return len(due)

    async def _send(self, row: asyncpg.Record) -> tuple[asyncpg.Record, str | None]:
        """Sends one event; the error, or None for a 2xx."""
        account = self.accounts[row["account"]]
        raw, headers = signed_request(account, row["body"])
        try:
            async with self.http.session.post(account.webhook_url, data=raw, headers=headers) as answer:
                await answer.read()
                return row, None if 200 <= answer.status < 300 else f"http_{answer.status}"
        except HTTP_ERRORS as exc:
            return row, f"{type(exc).__name__}: {exc}"[:300]

    async def _failed(self, row: asyncpg.Record, error: str) -> None:
        attempt = row["attempts"] + 1
        retry_in = self.retry_base * 2 ** (attempt - 1) if attempt < self.max_attempts else None
        await self.pool.execute(
            "UPDATE gateway_sim.webhook_outbox SET attempts = $2, last_error = $3, "
            "next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
            row["id"], attempt, error, retry_in)
        log.warning("webhook_failed", account=row["account"], event_id=row["event_id"], attempt=attempt,
                    error=error, given_up=retry_in is None)
