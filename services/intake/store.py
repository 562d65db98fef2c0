"""Intake's PostgreSQL store (schema `intake`)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.intake import credentials
from services.intake.domain import PaymentBalance, PaymentKey, ReservedTicket
from shared.contract import topics
from shared.contract.envelope import Outgoing
from shared.contract.events import RefundRequested
from shared.contract.money import Money


@dataclass(frozen=True)
class StoredOutcome:
    """What a request already got: its outcome event, and the hash of the body it came with."""

    event: Outgoing
    request_hash: str | None


async def stored_outcomes(conn: asyncpg.Connection, refund_ids: Sequence[str]) -> dict[str, StoredOutcome]:
    """refund_id -> the outcome of the requests among `refund_ids` seen before."""
    if not refund_ids:
        return {}
    rows = await conn.fetch(
        "SELECT refund_id, outcome_topic, outcome_key, outcome_value, outcome_headers, request_hash "
        "FROM intake.tickets WHERE refund_id = ANY($1::text[])", list(refund_ids))
    return {row["refund_id"]: StoredOutcome(
        event=Outgoing(topic=row["outcome_topic"], key=row["outcome_key"], value=row["outcome_value"],
                       headers={k: v.encode() for k, v in row["outcome_headers"].items()}, event_id=""),
        request_hash=row["request_hash"]) for row in rows}


async def lock_balances(conn: asyncpg.Connection,
                        captured: Mapping[PaymentKey, Money]) -> dict[PaymentKey, PaymentBalance]:
    """The payments' balance rows, each created on first sight (with its `captured`) and locked for this
    transaction, in (gateway, payment_id) order: every transaction that locks several takes them in one
    order, so two replicas' batches (and the HTTP path's one row) wait for each other, never deadlock."""
    if not captured:
        return {}
    # DO UPDATE (a no-op) instead of DO NOTHING so the existing rows are returned and locked.
    rows = await conn.fetch(
        "INSERT INTO intake.payment_balances (gateway, payment_id, currency, captured) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) "
        "AS p(gateway, payment_id, currency, captured) ORDER BY p.gateway, p.payment_id "
        "ON CONFLICT (gateway, payment_id) DO UPDATE SET gateway = EXCLUDED.gateway "
        "RETURNING gateway, payment_id, currency, captured, refunded",
        [gateway for gateway, _ in captured], [payment_id for _, payment_id in captured],
        [money.currency for money in captured.values()], [money.value for money in captured.values()])
    return {(row["gateway"], row["payment_id"]): PaymentBalance(row["currency"], row["captured"], row["refunded"])
            for row in rows}


async def reserve(conn: asyncpg.Connection, added: Mapping[PaymentKey, int]) -> None:
    """Add each payment's newly accepted refunds to its refunded amount (rows locked by `lock_balances`)."""
    if not added:
        return
    await conn.execute(
        "UPDATE intake.payment_balances b SET refunded = b.refunded + r.value "
        "FROM unnest($1::text[], $2::text[], $3::bigint[]) AS r(gateway, payment_id, value) "
        "WHERE b.gateway = r.gateway AND b.payment_id = r.payment_id",
        [gateway for gateway, _ in added], [payment_id for _, payment_id in added], list(added.values()))


async def release(conn: asyncpg.Connection, endings: Mapping[str, tuple[str, int]]) -> dict[str, int]:
    """Give accepted tickets' amounts back to their payments' balances and mark each ticket released as
    its status in `endings` (refund_id -> (status, payout attempt)), in this transaction; refund_id -> the
    amount given back, for the tickets that had one to give (accepted by intake, not released before, and
    reserved for that payout attempt: an older attempt's failure gives nothing back)."""
    if not endings:
        return {}
    refund_ids = list(endings)
    statuses, attempts = [status for status, _ in endings.values()], [attempt for _, attempt in endings.values()]
    # The balance rows first, in the order the accept path locks them, before any ticket is written.
    await conn.execute(
        "SELECT 1 FROM intake.tickets t JOIN intake.payment_balances b "
        "ON b.gateway = t.payment_gateway AND b.payment_id = t.payment_id "
        "WHERE t.refund_id = ANY($1::text[]) AND t.outcome = 'accepted' AND t.released_at IS NULL "
        "ORDER BY b.gateway, b.payment_id FOR UPDATE OF b", refund_ids)
    # `released_at IS NULL` again: a concurrent release of a ticket may have committed meanwhile.
    rows = await conn.fetch(
        "WITH released AS (UPDATE intake.tickets t SET released_at = now(), released_as = e.status "
        "FROM unnest($1::text[], $2::text[], $3::int[]) AS e(refund_id, status, attempt), intake.payment_balances b "
        "WHERE t.refund_id = e.refund_id AND t.outcome = 'accepted' AND t.released_at IS NULL "
        "AND t.payout_attempt = e.attempt "
        "AND b.gateway = t.payment_gateway AND b.payment_id = t.payment_id "
        "RETURNING t.refund_id, t.payment_gateway, t.payment_id, t.amount_value), "
        "given_back AS (UPDATE intake.payment_balances b SET refunded = b.refunded - r.value "
        "FROM (SELECT payment_gateway, payment_id, sum(amount_value)::bigint AS value FROM released "
        "GROUP BY payment_gateway, payment_id) r "
        "WHERE b.gateway = r.payment_gateway AND b.payment_id = r.payment_id) "
        "SELECT refund_id, amount_value FROM released", refund_ids, statuses, attempts)
    return {row["refund_id"]: row["amount_value"] for row in rows}


async def lock_for_reinstatement(conn: asyncpg.Connection, refund_ids: Sequence[str]
                                 ) -> dict[str, tuple[ReservedTicket, PaymentKey, PaymentBalance]]:
    """The accepted tickets among `refund_ids` with their payments' balances, the balance rows locked in the
    order the accept and release paths lock them (so reinstating waits for them and they for it)."""
    rows = await conn.fetch(
        "SELECT t.refund_id, t.amount_value, t.released_at, t.released_as, t.payout_attempt, "
        "  b.gateway, b.payment_id, b.currency, b.captured, b.refunded "
        "FROM intake.tickets t JOIN intake.payment_balances b "
        "  ON b.gateway = t.payment_gateway AND b.payment_id = t.payment_id "
        "WHERE t.refund_id = ANY($1::text[]) AND t.outcome = 'accepted' "
        "ORDER BY b.gateway, b.payment_id FOR UPDATE OF b, t", list(refund_ids))
    return {row["refund_id"]: (
        ReservedTicket(row["amount_value"], row["released_as"] if row["released_at"] else None,
                       row["payout_attempt"]),
        (row["gateway"], row["payment_id"]), PaymentBalance(row["currency"], row["captured"], row["refunded"]))
        for row in rows}


async def reinstate(conn: asyncpg.Connection, attempts: Mapping[str, int]) -> None:
    """Reserve the tickets' amounts again for their payout attempts (refund_id -> attempt): the tickets no
    longer released, the payments' refunded amounts up by them (rows locked by `lock_for_reinstatement`)."""
    if not attempts:
        return
    await conn.execute(
        "WITH reinstated AS (UPDATE intake.tickets t SET released_at = NULL, released_as = NULL, "
        "  payout_attempt = r.attempt, reinstated_at = now() "
        "  FROM unnest($1::text[], $2::int[]) AS r(refund_id, attempt) "
        "  WHERE t.refund_id = r.refund_id AND t.released_as = 'failed' AND t.payout_attempt = r.attempt - 1 "
        "  RETURNING t.payment_gateway, t.payment_id, t.amount_value) "
        "UPDATE intake.payment_balances b SET refunded = b.refunded + r.value "
        "FROM (SELECT payment_gateway, payment_id, sum(amount_value)::bigint AS value FROM reinstated "
        "  GROUP BY 1, 2) r WHERE b.gateway = r.payment_gateway AND b.payment_id = r.payment_id",
        list(attempts), list(attempts.values()))


@dataclass(frozen=True)
class Ticket:
    """One decided request as intake keeps it: the dedupe record, the outcome to answer a re-send with,
    and for an accepted refund what it reserved on which payment."""

    refund_id: str
    source: str
    request_id: str
    outcome: str  # accepted | rejected
    request: RefundRequested | None
    event: Outgoing
    received_at: datetime
    request_hash: str
    deadlines: dict[str, datetime] | None = None


async def save_tickets(conn: asyncpg.Connection, tickets: Sequence[Ticket]) -> None:
    if not tickets:
        return
    # In refund_id order: two transactions inserting some of the same keys wait, never deadlock.
    tickets = sorted(tickets, key=lambda ticket: ticket.refund_id)
    requests = [ticket.request for ticket in tickets]
    await conn.execute(
        "INSERT INTO intake.tickets (refund_id, source, request_id, outcome, payment_key, payment_gateway, "
        "payment_id, amount_value, currency, channel, region, outcome_topic, outcome_key, outcome_value, "
        "outcome_headers, received_at, request_hash, deadlines) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
        "$7::text[], $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], "
        "$14::bytea[], $15::jsonb[], $16::timestamptz[], $17::text[], $18::jsonb[])",
        [t.refund_id for t in tickets], [t.source for t in tickets], [t.request_id for t in tickets],
        [t.outcome for t in tickets],
        [f"{r.payment.gateway}/{r.payment.id}" if r else None for r in requests],
        [r.payment.gateway if r else None for r in requests],
        [r.payment.id if r else None for r in requests],
        [r.amount.value if r else None for r in requests],
        [r.amount.currency if r else None for r in requests],
        [r.payment.channel.value if r else None for r in requests],
        [r.region if r else None for r in requests],
        [t.event.topic for t in tickets], [t.event.key for t in tickets], [t.event.value for t in tickets],
        [{k: v.decode() for k, v in t.event.headers.items()} for t in tickets],
        [t.received_at for t in tickets], [t.request_hash for t in tickets],
        [{stage: due.isoformat() for stage, due in t.deadlines.items()} if t.deadlines else None
         for t in tickets])


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
