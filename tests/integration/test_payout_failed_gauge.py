"""The failed-payout gauges' counts on the real PostgreSQL: money owed to customers with no exit taken
(`waiting`, and how long the oldest has waited) and with one in flight (`pending`)."""

import uuid

import asyncpg

from services.payout import exit_store
from tests.integration.helpers import rolled_back


async def _payout(conn: asyncpg.Connection, status: str, failed_hours_ago: float | None) -> str:
    refund_id = f"rf_gauge{uuid.uuid4().hex}"
    await conn.execute(
        "INSERT INTO payout.payouts (refund_id, payout_id, idempotency_key, status, gateway, payment_id, "
        "  amount_value, currency, channel, refund, approved_at, finished_at) "
        "VALUES ($1, 'po_' || $1, 'key_' || $1, $2, 'sim', 'pi_' || $1, 500, 'EUR', 'card', '{}', now(), "
        "  now() - make_interval(secs => $3))", refund_id, status, (failed_hours_ago or 0) * 3600)
    return refund_id


async def _exit(conn: asyncpg.Connection, refund_id: str, state: str) -> None:
    await conn.execute(
        "INSERT INTO payout.exits (refund_id, attempt, exit, requested_by, reason, gateway, state) "
        "VALUES ($1, 2, 'reroute', 'ops@example.com', 'card closed', 'sim', $2)", refund_id, state)


async def test_failed_payouts_count_as_waiting_until_an_exit_is_in_flight(stack):
    # One snapshot: the stack's own payouts hold still between the two counts.
    async with rolled_back(stack.dsn, isolation="repeatable_read") as conn:
        before = await exit_store.count_failed_awaiting_exit(conn)
        await _payout(conn, "failed", failed_hours_ago=30)  # nobody acted: waiting, and the oldest
        refused = await _payout(conn, "failed", failed_hours_ago=2)
        await _exit(conn, refused, "refused")  # refused: still owed, waiting again
        asked = await _payout(conn, "failed", failed_hours_ago=1)
        await _exit(conn, asked, "requested")  # in flight: pending
        await _payout(conn, "succeeded", failed_hours_ago=None)
        await _payout(conn, "reversed", failed_hours_ago=3)  # a reversal is not a failed payout
        after = await exit_store.count_failed_awaiting_exit(conn)
        assert after["waiting"] - before["waiting"] == 2
        assert after["pending"] - before["pending"] == 1
        assert after["oldest"] >= 30 * 3600
