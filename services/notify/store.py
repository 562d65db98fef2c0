"""Notify's tables: the notification queue (durable send state) and opt-outs."""

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.notify.domain import Milestone


async def enqueue(conn: asyncpg.Connection, refund_id: str, milestone: Milestone,
                  recipients: Sequence[tuple[str, str]], locale: str, context: dict) -> int:
    """Queue one notification per (channel, recipient); a (refund, milestone, channel) queued before stays as is."""
    if not recipients:
        return 0
    rows = await conn.fetch(
        "INSERT INTO notify.notifications (refund_id, milestone, channel, recipient, locale, context) "
        "SELECT $1, $2, channel, recipient, $3, $4 FROM unnest($5::text[], $6::text[]) AS r(channel, recipient) "
        "ON CONFLICT (refund_id, milestone, channel) DO NOTHING RETURNING id",
        refund_id, milestone.value, locale, context, [c for c, _ in recipients], [r for _, r in recipients])
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
