"""A service SIGKILLed mid-batch and restarted: every refund still terminal, none paid twice."""

import asyncio

import pytest

from shared.contract.lifecycle import TERMINAL_STATUSES
from tests.integration.helpers import publish, refund_of, valid_request

pytestmark = pytest.mark.integration
BATCH = 300
RELAY_WINDOW_SECONDS = 14


@pytest.mark.parametrize("victim", ["payout", "intake", "notify"])
async def test_service_killed_mid_batch_loses_nothing_and_pays_once(victim, stack, producer, status_feed, db):
    requests = [valid_request(amount=100 + i, captured=100 + i) for i in range(BATCH)]
    expected = {refund_of(r) for r in requests}

    async def publish_all():
        for request in requests:
            await publish(producer, request)

    publishing = asyncio.create_task(publish_all())
    # Kill once the stage is demonstrably mid-batch: some refunds done, most not.
    assert await status_feed.wait_for(
        lambda: 10 <= len(expected & status_feed.terminal_at.keys()), timeout=60)
    stack.kill_service(victim)
    await publishing
    stack.start_service(victim)

    all_terminal = await status_feed.wait_for(
        lambda: expected <= status_feed.terminal_at.keys(), timeout=180)
    missing = expected - status_feed.terminal_at.keys()
    assert all_terminal, f"{len(missing)} refunds not terminal, e.g. {[status_feed.status_of(r) for r in list(missing)[:5]]}"
    assert {status_feed.status_of(r) for r in expected} <= {s.value for s in TERMINAL_STATUSES}

    ids = list(expected)
    # Invariant 1: at most one gateway refund and one payout per refund.
    assert await db.fetchval(
        "SELECT count(*) FROM (SELECT idempotency_key FROM gateway_sim.refunds WHERE idempotency_key = ANY($1) "
        "GROUP BY 1 HAVING count(*) > 1) twice", ids) == 0
    paid_at_gateway = await db.fetchval(
        "SELECT count(*) FROM gateway_sim.refunds WHERE idempotency_key = ANY($1) AND status = 'succeeded'", ids)
    paid_by_payout = await db.fetchval(
        "SELECT count(*) FROM payout.payouts WHERE refund_id = ANY($1) AND status = 'succeeded'", ids)
    assert paid_at_gateway == paid_by_payout
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.settlement_lines s JOIN gateway_sim.refunds r "
                             "USING (gateway_ref) WHERE r.idempotency_key = ANY($1)", ids) == paid_at_gateway
    # Invariant 5: paid total = matched settlement total + open discrepancies, to the minor unit.
    paid_total = await db.fetchval(
        "SELECT coalesce(sum(amount_value), 0) FROM payout.payouts WHERE refund_id = ANY($1) AND status = 'succeeded'",
        ids)
    reconciled_total = await db.fetchval(
        "SELECT coalesce(sum(amount_value), 0) FROM reconcile.payouts WHERE refund_id = ANY($1) "
        "AND state IN ('matched', 'discrepancy')", ids)
    assert paid_total == reconciled_total

    # The compacted feed: what is left per key (the last record) is notify's current status, also
    # after the outbox relay has republished whatever the kill left unconfirmed (rows older than 10 s).
    # Nothing to wait on: the check is that no stale record comes within the relay's window (its
    # age threshold plus a round), so this waits out that window.
    await asyncio.sleep(RELAY_WINDOW_SECONDS)
    current = dict(await db.fetch("SELECT refund_id, status FROM notify.refund_status WHERE refund_id = ANY($1)", ids))
    last_on_feed = {r: status_feed.history[r][-1] for r in ids}
    stale = {r: (last_on_feed[r], current[r]) for r in ids if last_on_feed[r] != current[r]}
    assert not stale, f"{len(stale)} refunds end on a stale record (feed, notify), e.g. {list(stale.items())[:3]}"
