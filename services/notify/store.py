"""Notify's tables: the status projection, the notification queue (durable send state) and opt-outs."""

from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg
import orjson

from services.notify.domain import Notification, StatusRow
from shared.contract.events import Status
from shared.runtime.db import array_params


# The status projection's columns (as domain.StatusRow names them) and their types. reason_codes and
# history travel as JSON text: a text[][] is no array of arrays to unnest (and asyncpg reads lists as dimensions).
_COLUMNS = {
    "refund_id": "text", "status": "text", "request_id": "text", "source": "text", "order_id": "text",
    "amount": "jsonb", "channel": "text", "reason_codes": "text", "eta": "timestamptz", "timeline": "jsonb",
    "updated_at": "timestamptz", "customer": "jsonb", "drill": "boolean", "deadlines": "jsonb", "stage": "text",
    "stage_rank": "int", "entered_at": "timestamptz", "accepted_at": "timestamptz", "sequence": "bigint",
    "payout_attempt": "int", "history": "text",
}
_NAMES = ", ".join(_COLUMNS)
_LOCK = f"SELECT {_NAMES} FROM notify.refund_status WHERE refund_id = ANY($1::text[]) ORDER BY refund_id FOR UPDATE"
_READ = f"SELECT {_NAMES} FROM notify.refund_status WHERE refund_id = ANY($1::text[])"
_VALUES = ", ".join("ARRAY(SELECT jsonb_array_elements_text(n.reason_codes::jsonb))" if name == "reason_codes"
                    else "n.history::jsonb" if name == "history" else f"n.{name}" for name in _COLUMNS)
_ARRAYS = array_params(_COLUMNS.values())
# A row that exists but was not locked (another replica inserted it after the lock) is left as it is.
_SAVE = (
    f"INSERT INTO notify.refund_status ({_NAMES}) SELECT {_VALUES} FROM unnest({_ARRAYS}) AS n({_NAMES}) "
    f"ON CONFLICT (refund_id) DO UPDATE SET {', '.join(f'{name} = EXCLUDED.{name}' for name in list(_COLUMNS)[1:])} "
    f"WHERE refund_status.refund_id = ANY(${len(_COLUMNS) + 1}::text[]) RETURNING refund_id"
)


def _row(record: asyncpg.Record) -> StatusRow:
    return StatusRow(**{**record, "status": Status(record["status"]), "reason_codes": list(record["reason_codes"])})


async def lock_statuses(conn: asyncpg.Connection, refund_ids: Sequence[str]) -> dict[str, StatusRow]:
    """The refunds' status rows that exist, locked until the transaction ends (in refund_id order, so
    two replicas locking overlapping batches never deadlock on them)."""
    return {record["refund_id"]: _row(record) for record in await conn.fetch(_LOCK, list(refund_ids))}


async def save_statuses(conn: asyncpg.Connection, rows: Sequence[StatusRow], locked: Iterable[str]) -> set[str]:
    """Write the rows in one statement; return the refunds written. A refund that had no row when `locked`
    was taken but has one now (a concurrent insert) is not written: fold it again on the row it has."""
    rows = sorted(rows, key=lambda row: row.refund_id)  # inserts, too, take their locks in one order
    columns = {name: [getattr(row, name) for row in rows] for name in _COLUMNS}
    columns["reason_codes"] = [orjson.dumps(codes).decode() for codes in columns["reason_codes"]]
    columns["history"] = [orjson.dumps(history).decode() for history in columns["history"]]
    written = await conn.fetch(_SAVE, *columns.values(), list(locked))
    return {record["refund_id"] for record in written}


async def statuses(conn: asyncpg.Connection, refund_ids: Sequence[str]) -> list[StatusRow]:
    """The refunds' current status rows (those that exist)."""
    return [_row(record) for record in await conn.fetch(_READ, list(refund_ids))]


async def enqueue(conn: asyncpg.Connection, notifications: Sequence[Notification]) -> int:
    """Queue the notifications in one statement; a (refund, milestone, channel, attempt) queued before stays as is."""
    if not notifications:
        return 0
    rows = await conn.fetch(
        "INSERT INTO notify.notifications (refund_id, milestone, channel, recipient, locale, context, attempt) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::int[]) "
        "ON CONFLICT (refund_id, milestone, channel, attempt) DO NOTHING RETURNING id",
        *([getattr(n, c) for n in notifications]
          for c in ("refund_id", "milestone", "channel", "recipient", "locale", "context", "attempt")))
    return len(rows)


async def claim_due(pool: asyncpg.Pool, limit: int, lease_seconds: float) -> list[asyncpg.Record]:
    """Take due notifications (and ones a crashed sender left `sending`) under a lease,
    each with its refund's platform, order and payment channel and whether its customer opted out."""
    return await pool.fetch(
        "UPDATE notify.notifications n SET state = 'sending', attempts = attempts + 1, "
        "lease_until = now() + make_interval(secs => $2) "
        "FROM notify.refund_status s LEFT JOIN notify.opt_outs o "
        "  ON o.source = s.source AND o.customer_id = s.customer ->> 'id' "
        "WHERE s.refund_id = n.refund_id AND n.id IN ("
        "  SELECT id FROM notify.notifications WHERE (state = 'pending' AND next_attempt_at <= now()) "
        "  OR (state = 'sending' AND lease_until < now()) ORDER BY next_attempt_at LIMIT $1 "
        "  FOR UPDATE SKIP LOCKED) "
        "RETURNING n.*, s.source, s.order_id, s.amount, s.channel AS payment_channel, "
        "o.customer_id IS NOT NULL AS opted_out", limit, lease_seconds)


async def opted_out(pool: asyncpg.Pool, source: str, customer_id: str | None) -> bool:
    if not customer_id:
        return False
    return bool(await pool.fetchval(
        "SELECT 1 FROM notify.opt_outs WHERE source = $1 AND customer_id = $2", source, customer_id))


async def opt_out(pool: asyncpg.Pool, source: str, customer_id: str) -> None:
    await pool.execute("INSERT INTO notify.opt_outs (source, customer_id) VALUES ($1, $2) "
                       "ON CONFLICT DO NOTHING", source, customer_id)


async def settle(pool: asyncpg.Pool, notification_id: int, state: str, error: str | None = None) -> None:
    """Final state: sent, skipped (opted out) or failed (out of attempts)."""
    await pool.execute(
        "UPDATE notify.notifications SET state = $2, last_error = $3, lease_until = NULL, "
        "sent_at = CASE WHEN $2 = 'sent' THEN now() END WHERE id = $1", notification_id, state, error)


async def retry_at(pool: asyncpg.Pool, notification_id: int, when: datetime, error: str) -> None:
    await pool.execute(
        "UPDATE notify.notifications SET state = 'pending', next_attempt_at = $2, last_error = $3, "
        "lease_until = NULL WHERE id = $1", notification_id, when, error[:2000])


async def count_inquiry(pool: asyncpg.Pool, where: str, *args: object) -> asyncpg.Record | None:
    """Look a refund up and count the look-up toward the repeat-inquiry KPI."""
    return await pool.fetchrow(
        f"UPDATE notify.refund_status SET inquiries = inquiries + 1 WHERE {where} RETURNING *", *args)


# -- the customer's new destination and feedback ---------------------------------------------------

async def lock_status(conn: asyncpg.Connection, refund_id: str) -> asyncpg.Record | None:
    """The refund's status row, locked until the transaction ends (a destination given twice at once waits)."""
    return await conn.fetchrow("SELECT refund_id, status, payout_attempt, reason_codes FROM notify.refund_status "
                               "WHERE refund_id = $1 FOR UPDATE", refund_id)


async def destination_for(conn: asyncpg.Connection | asyncpg.Pool, refund_id: str,
                          attempt: int) -> asyncpg.Record | None:
    """The destination the customer gave after payout attempt `attempt` failed, if any."""
    return await conn.fetchrow("SELECT summary, provided_at FROM notify.destinations "
                               "WHERE refund_id = $1 AND attempt = $2", refund_id, attempt)


async def record_destination(conn: asyncpg.Connection, refund_id: str, attempt: int, channel: str,
                             summary: str, provided_at: datetime) -> bool:
    """Keep the destination's summary for the failed attempt; False if one was given for it already."""
    return bool(await conn.fetchval(
        "INSERT INTO notify.destinations (refund_id, attempt, channel, summary, provided_at) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true",
        refund_id, attempt, channel, summary, provided_at))


async def save_feedback(pool: asyncpg.Pool, refund_id: str, rating: int, comment: str | None) -> asyncpg.Record:
    """The refund's feedback, new or replacing the customer's earlier one; `first` says which."""
    return await pool.fetchrow(
        "INSERT INTO notify.feedback (refund_id, rating, comment) VALUES ($1, $2, $3) "
        "ON CONFLICT (refund_id) DO UPDATE SET rating = EXCLUDED.rating, comment = EXCLUDED.comment, "
        "updated_at = now() RETURNING rating, comment, updated_at AS at, (xmax = 0) AS first",
        refund_id, rating, comment)


async def feedback_of(pool: asyncpg.Pool, refund_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT rating, comment, updated_at AS at FROM notify.feedback "
                               "WHERE refund_id = $1", refund_id)


# -- the console's tickets --------------------------------------------------------------------------

# Each arm is an index (refund_id's key, request_id, order_id, the customer's id: 0001, 0054), so the
# planner ORs four index scans: no scan of the whole projection.
_SEARCH = (
    "SELECT refund_id, request_id, source, order_id, customer ->> 'id' AS customer_id, status, amount, updated_at "
    "FROM notify.refund_status WHERE refund_id = $1 OR request_id = $1 OR order_id = $1 OR customer ->> 'id' = $1 "
    "ORDER BY updated_at DESC LIMIT $2")


async def search_tickets(pool: asyncpg.Pool, q: str, limit: int = 50) -> list[asyncpg.Record]:
    """The refunds a refund id, request id, order id or customer id names, most recently changed first."""
    return await pool.fetch(_SEARCH, q, limit)


async def ticket(pool: asyncpg.Pool, refund_id: str) -> asyncpg.Record | None:
    """A refund's status row as the console reads it (not counted as a customer's inquiry)."""
    return await pool.fetchrow("SELECT * FROM notify.refund_status WHERE refund_id = $1", refund_id)


async def notifications_of(pool: asyncpg.Pool, refund_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT channel, milestone, attempt, state, attempts, sent_at, created_at FROM notify.notifications "
        "WHERE refund_id = $1 ORDER BY created_at, id", refund_id)
