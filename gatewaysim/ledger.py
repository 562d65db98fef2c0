"""The simulator's durable ledger (schema `gateway_sim`), shared by the HTTP app and the in-process SimGateway.

Payments, refunds (one per account and idempotency key, never paid twice),
settlement lines (append-only, the ground truth of money moved) and the time-
driven changes: a `pending` refund is confirmed at `confirm_at`, a `sim-reverse`
one is reversed at `reverse_at`. Every change that a personality announces
writes its webhook in the same transaction (gatewaysim/webhooks.py).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg

from gatewaysim import faults as fault_rules, objects, webhooks
from gatewaysim.faults import REVERSAL_REASON, TRANSIENT_FAILURES, SimFaults

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA = "gateway_sim"


@dataclass(frozen=True)
class SettlementLine:
    line_id: int
    gateway_ref: str
    amount_value: int
    currency: str
    fee_value: int
    kind: str = "refund"
    created_at: datetime | None = None
    batch: int | None = None


@dataclass(frozen=True)
class NewRefund:
    """A refund the gateway is asked to make; `settle_*` is what it moves the merchant's balance by."""

    account: str
    idempotency_key: str
    gateway_ref: str
    payment_id: str
    amount_value: int
    currency: str
    settle_value: int
    settle_currency: str
    channel: str = "card"
    personality: str | None = None
    metadata: dict = field(default_factory=dict)


async def count_rejection(pool: asyncpg.Pool, account: str, idempotency_key: str) -> bool:
    """Count a call that `sim-5xx` may refuse; True while it is among the first TRANSIENT_FAILURES."""
    calls = await pool.fetchval(
        "INSERT INTO gateway_sim.rejected_calls (account, idempotency_key, calls) VALUES ($1, $2, 1) "
        "ON CONFLICT (account, idempotency_key) DO UPDATE SET calls = rejected_calls.calls + 1 RETURNING calls",
        account, idempotency_key)
    return calls <= TRANSIENT_FAILURES


async def record_refund(conn: asyncpg.Connection, refund: NewRefund, faults: SimFaults) -> asyncpg.Record:
    """Insert the refund once per (account, key); a repeat counts the call and returns the row as it stands.

    The row has `inserted`: whether this call made it.
    """
    status, reason = fault_rules.first_outcome(refund.payment_id, refund.channel, faults)
    fee = fault_rules.fee(refund.payment_id, refund.settle_value, faults)
    # The settlement line of a refund that succeeded at once goes in with it (one statement, see
    # _append_line for why no lock).
    row = await conn.fetchrow(
        "WITH r AS (INSERT INTO gateway_sim.refunds (account, idempotency_key, gateway_ref, payment_id, "
        "  amount_value, currency, status, failure_reason, confirm_at, reverse_at, settle_value, settle_currency, "
        "  fee_value, channel, personality, metadata) "
        "  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
        "    CASE WHEN $7 = 'pending' THEN now() + $9::interval END, "
        "    CASE WHEN $10 AND $7 = 'succeeded' THEN now() + $11::interval END, $12, $13, $14, $15, $16, $17) "
        "  ON CONFLICT (account, idempotency_key) DO UPDATE SET refund_calls = refunds.refund_calls + 1 "
        "  RETURNING *, (xmax = 0) AS inserted), "
        f"line AS ({_LINE_INSERT} SELECT account, gateway_ref, settle_value, settle_currency, fee_value, 'refund', "
        "  clock_timestamp() FROM r WHERE inserted AND status = 'succeeded') "
        "SELECT * FROM r",
        refund.account, refund.idempotency_key, refund.gateway_ref, refund.payment_id, refund.amount_value,
        refund.currency, status, reason, faults.confirm_after, fault_rules.will_reverse(refund.payment_id, faults),
        faults.reverse_after, refund.settle_value, refund.settle_currency, fee, refund.channel,
        refund.personality, refund.metadata)
    if row["inserted"]:
        await webhooks.announce(conn, row, "created")
    return row


async def count_call(conn: asyncpg.Connection | asyncpg.Pool, account: str, idempotency_key: str) -> None:
    """A create call answered from the idempotency store still reached the gateway."""
    await conn.execute("UPDATE gateway_sim.refunds SET refund_calls = refund_calls + 1 "
                       "WHERE account = $1 AND idempotency_key = $2", account, idempotency_key)


async def advance(conn: asyncpg.Connection, accounts: Sequence[str]) -> int:
    """Let time act on these accounts: confirm due `pending` refunds, reverse due `sim-reverse` ones."""
    confirmed = await conn.fetch(
        "UPDATE gateway_sim.refunds SET status = 'succeeded' WHERE account = ANY($1) AND status = 'pending' "
        "AND confirm_at <= now() RETURNING *", list(accounts))
    for row in confirmed:
        await _append_line(conn, row, "refund")
        await webhooks.announce(conn, row, "confirmed")
    reversed_ = await conn.fetch(
        "UPDATE gateway_sim.refunds SET status = 'reversed', failure_reason = $2, reversed_at = now() "
        "WHERE account = ANY($1) AND status = 'succeeded' AND reverse_at <= now() RETURNING *",
        list(accounts), REVERSAL_REASON)
    for row in reversed_:
        await _append_line(conn, row, "refund_reversal")
        await webhooks.announce(conn, row, "reversed")
    return len(confirmed) + len(reversed_)


_LINE_INSERT = ("INSERT INTO gateway_sim.settlement_lines (account, gateway_ref, amount_value, currency, fee_value, "
                "kind, settled_at)")


async def _append_line(conn: asyncpg.Connection, refund: asyncpg.Record, kind: str) -> None:
    # No lock: the reports reconcile reads never follow line ids across transactions. Stripe's report is
    # an interval of `created_at` that ends 2 s ago (stripe_api._DATA_LAG, longer than any refund's
    # transaction); Adyen's batch takes the lines that committed before it closed, a later one goes in the
    # next batch. Serialising every refund's transaction on one lock until its commit capped the whole
    # simulator at ~100 refunds/s (pg_stat_statements: 25 ms waiting per lock, make bench at 100/s).
    # The fee is charged on the refund only.
    await conn.execute(
        f"{_LINE_INSERT} VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp())",
        refund["account"], refund["gateway_ref"], refund["settle_value"], refund["settle_currency"],
        refund["fee_value"] if kind == "refund" else 0, kind)


def _line(row: asyncpg.Record) -> SettlementLine:
    return SettlementLine(row["id"], row["gateway_ref"], row["amount_value"], row["currency"], row["fee_value"],
                          row["kind"], row["created_at"], row["batch"])


_LINE_COLUMNS = "id, gateway_ref, amount_value, currency, fee_value, kind, created_at, batch"


async def lines_after(conn: asyncpg.Connection | asyncpg.Pool, account: str, after_line_id: int,
                      limit: int) -> list[SettlementLine]:
    """Lines after an id, for the in-process SimGateway, which writes them itself one call at a time (with
    refunds committing concurrently, an id cursor could pass a line whose transaction commits late)."""
    rows = await conn.fetch(f"SELECT {_LINE_COLUMNS} FROM gateway_sim.settlement_lines WHERE account = $1 "
                            "AND id > $2 ORDER BY id LIMIT $3", account, after_line_id, limit)
    return [_line(r) for r in rows]


async def lines_between(conn: asyncpg.Connection, account: str, start: datetime,
                        end: datetime) -> list[SettlementLine]:
    rows = await conn.fetch(f"SELECT {_LINE_COLUMNS} FROM gateway_sim.settlement_lines WHERE account = $1 "
                            "AND created_at >= $2 AND created_at < $3 ORDER BY id", account, start, end)
    return [_line(r) for r in rows]


async def first_line_at(conn: asyncpg.Connection, account: str) -> datetime | None:
    return await conn.fetchval("SELECT min(created_at) FROM gateway_sim.settlement_lines WHERE account = $1",
                               account)


async def lines_of_batch(conn: asyncpg.Connection, account: str, batch: int) -> list[SettlementLine] | None:
    """The batch's lines; None while it is not closed."""
    if not await conn.fetchval("SELECT true FROM gateway_sim.settlement_batches WHERE account = $1 AND batch = $2",
                               account, batch):
        return None
    rows = await conn.fetch(f"SELECT {_LINE_COLUMNS} FROM gateway_sim.settlement_lines WHERE account = $1 "
                            "AND batch = $2 ORDER BY id", account, batch)
    return [_line(r) for r in rows]


async def close_batch(pool: asyncpg.Pool, account: str) -> int | None:
    """Close the account's lines not yet in a batch into the next one; its number, or None if there were none."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('gateway_sim.batch:' || $1))", account)
        batch = await conn.fetchval("SELECT coalesce(max(batch), 0) + 1 FROM gateway_sim.settlement_batches "
                                    "WHERE account = $1", account)
        moved = await conn.execute("UPDATE gateway_sim.settlement_lines SET batch = $2 WHERE account = $1 "
                                   "AND batch IS NULL", account, batch)
        lines = int(moved.split()[-1])
        if not lines:
            return None
        await conn.execute("INSERT INTO gateway_sim.settlement_batches (account, batch, lines) VALUES ($1, $2, $3)",
                           account, batch, lines)
        return batch


async def create_payment(conn: asyncpg.Connection | asyncpg.Pool, account: str, payment_id: str, amount_value: int,
                         currency: str) -> tuple[asyncpg.Record, bool]:
    """(the payment, whether it matches the values asked): creating it again with the same values is a no-op."""
    await conn.execute(
        "INSERT INTO gateway_sim.payments (account, id, charge_id, amount_value, currency) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        account, payment_id, objects.charge_id(payment_id), amount_value, currency)
    row = await conn.fetchrow("SELECT * FROM gateway_sim.payments WHERE account = $1 AND id = $2",
                              account, payment_id)
    return row, (row["amount_value"], row["currency"]) == (amount_value, currency)


async def find_payment(conn: asyncpg.Connection | asyncpg.Pool, account: str, reference: str, *,
                       lock: bool = False) -> asyncpg.Record | None:
    """A payment by its id or its charge's id; `lock` holds it for the transaction (refunds on it serialise)."""
    return await conn.fetchrow(
        "SELECT * FROM gateway_sim.payments WHERE account = $1 AND (id = $2 OR charge_id = $2) "
        "ORDER BY id = $2 DESC LIMIT 1" + (" FOR UPDATE" if lock else ""), account, reference)


async def payment_with_refunded(conn: asyncpg.Connection | asyncpg.Pool, account: str,
                                payment_id: str) -> tuple[asyncpg.Record, int] | None:
    """A payment by its own id and what its refunds took (as `refunded_value`), in one statement: the
    read every refund's verification makes."""
    row = await conn.fetchrow(
        "SELECT p.*, (SELECT coalesce(sum(r.amount_value), 0) FROM gateway_sim.refunds r WHERE r.account = p.account "
        "  AND r.payment_id = p.id AND r.status IN ('pending', 'succeeded'))::bigint AS refunded "
        "FROM gateway_sim.payments p WHERE p.account = $1 AND p.id = $2", account, payment_id)
    return None if row is None else (row, row["refunded"])


async def refunded_value(conn: asyncpg.Connection | asyncpg.Pool, account: str, payment_id: str) -> int:
    """What the payment's refunds took: pending and succeeded ones (failed and reversed gave it back)."""
    return await conn.fetchval(
        "SELECT coalesce(sum(amount_value), 0)::bigint FROM gateway_sim.refunds WHERE account = $1 AND payment_id = $2 "
        "AND status IN ('pending', 'succeeded')", account, payment_id)


async def refunded_and_key_used(conn: asyncpg.Connection, account: str, payment_id: str,
                                idempotency_key: str) -> tuple[int, bool]:
    """What the payment's refunds took (as `refunded_value`) and whether a refund has this key, at once."""
    row = await conn.fetchrow(
        "SELECT (SELECT coalesce(sum(amount_value), 0) FROM gateway_sim.refunds WHERE account = $1 "
        "  AND payment_id = $2 AND status IN ('pending', 'succeeded'))::bigint AS refunded, "
        "EXISTS (SELECT 1 FROM gateway_sim.refunds WHERE account = $1 AND idempotency_key = $3) AS key_used",
        account, payment_id, idempotency_key)
    return row["refunded"], row["key_used"]


async def refund_by_key(conn: asyncpg.Connection, account: str, idempotency_key: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM gateway_sim.refunds WHERE account = $1 AND idempotency_key = $2",
                               account, idempotency_key)


async def look_up_refund(pool: asyncpg.Pool, account: str, gateway_ref: str) -> asyncpg.Record | None:
    """A refund by its id, counted as a lookup."""
    return await pool.fetchrow("UPDATE gateway_sim.refunds SET lookups = lookups + 1 WHERE account = $1 "
                               "AND gateway_ref = $2 RETURNING *", account, gateway_ref)


async def list_refunds(pool: asyncpg.Pool, account: str, payment_id: str | None, limit: int,
                       starting_after: str | None) -> tuple[list[asyncpg.Record], bool] | None:
    """A page of refunds, newest first, each counted as a lookup; None if `starting_after` is unknown."""
    after_seq = None
    if starting_after is not None:
        after_seq = await pool.fetchval("SELECT seq FROM gateway_sim.refunds WHERE account = $1 AND gateway_ref = $2",
                                        account, starting_after)
        if after_seq is None:
            return None
    rows = await pool.fetch(
        "SELECT * FROM gateway_sim.refunds WHERE account = $1 AND ($2::text IS NULL OR payment_id = $2) "
        "AND ($3::bigint IS NULL OR seq < $3) ORDER BY seq DESC LIMIT $4", account, payment_id, after_seq, limit + 1)
    page = rows[:limit]
    await pool.execute("UPDATE gateway_sim.refunds SET lookups = lookups + 1 WHERE account = $1 AND seq = ANY($2)",
                       account, [r["seq"] for r in page])
    return page, len(rows) > limit
