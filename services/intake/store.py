"""Intake's PostgreSQL store (schema `intake`)."""

from datetime import datetime

import asyncpg

from services.intake.domain import PaymentBalance
from shared.envelope import Outgoing
from shared.events import RefundRequested


async def stored_outcome(conn: asyncpg.Connection, refund_id: str) -> Outgoing | None:
    """The event a request already got, if (source, request_id) was seen before."""
    row = await conn.fetchrow(
        "SELECT outcome_topic, outcome_key, outcome_value, outcome_headers, outcome "
        "FROM intake.tickets WHERE refund_id = $1", refund_id)
    if row is None:
        return None
    return Outgoing(topic=row["outcome_topic"], key=row["outcome_key"], value=row["outcome_value"],
                    headers={k: v.encode() for k, v in row["outcome_headers"].items()}, event_id="")


async def lock_balance(conn: asyncpg.Connection, request: RefundRequested) -> PaymentBalance:
    """The payment's balance row, created on first sight and locked for this transaction."""
    # DO UPDATE (a no-op) instead of DO NOTHING so the existing row is returned and locked.
    row = await conn.fetchrow(
        "INSERT INTO intake.payment_balances (gateway, payment_id, currency, captured) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (gateway, payment_id) "
        "DO UPDATE SET gateway = EXCLUDED.gateway RETURNING currency, captured, refunded",
        request.payment.gateway, request.payment.id,
        request.payment.captured.currency, request.payment.captured.value)
    return PaymentBalance(row["currency"], row["captured"], row["refunded"])


async def reserve(conn: asyncpg.Connection, request: RefundRequested) -> None:
    await conn.execute(
        "UPDATE intake.payment_balances SET refunded = refunded + $3 "
        "WHERE gateway = $1 AND payment_id = $2",
        request.payment.gateway, request.payment.id, request.amount.value)


async def save_ticket(conn: asyncpg.Connection, *, refund_id: str, source: str, request_id: str,
                      outcome: str, request: RefundRequested | None, event: Outgoing,
                      received_at: datetime) -> None:
    await conn.execute(
        "INSERT INTO intake.tickets (refund_id, source, request_id, outcome, payment_key, amount_value, "
        "currency, channel, region, outcome_topic, outcome_key, outcome_value, outcome_headers, received_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        refund_id, source, request_id, outcome,
        f"{request.payment.gateway}/{request.payment.id}" if request else None,
        request.amount.value if request else None,
        request.amount.currency if request else None,
        request.payment.channel.value if request else None,
        request.region if request else None,
        event.topic, event.key, event.value,
        {k: v.decode() for k, v in event.headers.items()}, received_at)
