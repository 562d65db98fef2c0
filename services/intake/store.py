"""Intake's PostgreSQL store (schema `intake`)."""

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.intake import credentials
from services.intake.domain import PaymentBalance
from shared import topics
from shared.envelope import Outgoing
from shared.events import RefundRequested


@dataclass(frozen=True)
class StoredOutcome:
    """What a request already got: its outcome event, and the hash of the body it came with."""

    event: Outgoing
    request_hash: str | None


async def stored_outcome(conn: asyncpg.Connection, refund_id: str) -> StoredOutcome | None:
    """The outcome of (source, request_id), if it was seen before."""
    row = await conn.fetchrow(
        "SELECT outcome_topic, outcome_key, outcome_value, outcome_headers, request_hash "
        "FROM intake.tickets WHERE refund_id = $1", refund_id)
    if row is None:
        return None
    event = Outgoing(topic=row["outcome_topic"], key=row["outcome_key"], value=row["outcome_value"],
                     headers={k: v.encode() for k, v in row["outcome_headers"].items()}, event_id="")
    return StoredOutcome(event=event, request_hash=row["request_hash"])


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


async def release(conn: asyncpg.Connection, refund_id: str, status: str) -> int | None:
    """Give an accepted ticket's amount back to its payment's balance and mark the ticket released as
    `status`, in this transaction; the amount, or None when there is nothing to give back (no
    accepted ticket of intake's, or released before)."""
    # The balance row first, as the accept path locks it before it writes a ticket.
    payment = await conn.fetchrow(
        "SELECT b.gateway, b.payment_id FROM intake.tickets t JOIN intake.payment_balances b "
        "ON b.gateway = t.payment_gateway AND b.payment_id = t.payment_id "
        "WHERE t.refund_id = $1 AND t.outcome = 'accepted' AND t.released_at IS NULL FOR UPDATE OF b", refund_id)
    if payment is None:
        return None
    # `released_at IS NULL` again: a concurrent release of this ticket may have committed meanwhile.
    return await conn.fetchval(
        "WITH released AS (UPDATE intake.tickets SET released_at = now(), released_as = $4 "
        "WHERE refund_id = $1 AND released_at IS NULL RETURNING amount_value) "
        "UPDATE intake.payment_balances b SET refunded = b.refunded - r.amount_value FROM released r "
        "WHERE b.gateway = $2 AND b.payment_id = $3 RETURNING r.amount_value",
        refund_id, payment["gateway"], payment["payment_id"], status)


async def save_ticket(conn: asyncpg.Connection, *, refund_id: str, source: str, request_id: str,
                      outcome: str, request: RefundRequested | None, event: Outgoing,
                      received_at: datetime, request_hash: str,
                      deadlines: dict[str, datetime] | None = None) -> None:
    await conn.execute(
        "INSERT INTO intake.tickets (refund_id, source, request_id, outcome, payment_key, payment_gateway, "
        "payment_id, amount_value, currency, channel, region, outcome_topic, outcome_key, outcome_value, "
        "outcome_headers, received_at, request_hash, deadlines) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        refund_id, source, request_id, outcome,
        f"{request.payment.gateway}/{request.payment.id}" if request else None,
        request.payment.gateway if request else None,
        request.payment.id if request else None,
        request.amount.value if request else None,
        request.amount.currency if request else None,
        request.payment.channel.value if request else None,
        request.region if request else None,
        event.topic, event.key, event.value,
        {k: v.decode() for k, v in event.headers.items()}, received_at, request_hash,
        {stage: due.isoformat() for stage, due in deadlines.items()} if deadlines else None)


async def create_api_key(conn: asyncpg.Connection, source: str, *, label: str | None = None,
                         expires_at: datetime | None = None) -> credentials.NewApiKey:
    """A new active key for `source`; its other keys stay valid until revoked (rotation)."""
    new = credentials.mint()
    await conn.execute(
        "INSERT INTO intake.api_keys (key_id, source, key_hash, label, expires_at) VALUES ($1, $2, $3, $4, $5)",
        new.key_id, source, new.key_hash, label, expires_at)
    return new


async def source_of_key(conn: asyncpg.Connection, key: str) -> str | None:
    """The source an active (not revoked, not expired) key belongs to; None for any other key."""
    return await conn.fetchval(
        "SELECT source FROM intake.api_keys WHERE key_hash = $1 AND revoked_at IS NULL "
        "AND (expires_at IS NULL OR expires_at > now())", credentials.hash_key(key))


async def list_api_keys(conn: asyncpg.Connection, source: str | None = None) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT key_id, source, label, created_at, expires_at, revoked_at FROM intake.api_keys "
        "WHERE $1::text IS NULL OR source = $1 ORDER BY source, created_at", source)


async def revoke_api_key(conn: asyncpg.Connection, key_id: str) -> bool:
    """Revoke a key now; False if there is no such active key."""
    done = await conn.execute(
        "UPDATE intake.api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL", key_id)
    return done != "UPDATE 0"


# A refund is in intake until its accepted event has left the outbox; due by the ticket's own
# intake deadline (the SLA table, per channel/region).
BACKLOG = (
    "SELECT count(*) AS inflight, "
    "count(*) FILTER (WHERE (t.deadlines ->> 'intake')::timestamptz < now()) AS overdue, "
    "extract(epoch FROM now() - min(t.received_at)) AS oldest_age "
    "FROM intake.outbox o JOIN intake.tickets t ON t.refund_id = o.key "
    f"WHERE o.topic = '{topics.ACCEPTED}'"
)
