"""Two payout replicas and a gateway slower than the claim lease: every refund is paid, and announced, once.

One gateway call here (the simulator answers after 4 s) outlasts the lease (PAYOUT_RECLAIM_AFTER_SECONDS, 3 s), so the other replica
sees the rows a call is still running for as orphaned unless their holder keeps its claim; a holder whose
claim was taken over must then write nothing (issue 11: a late writer published a second `refund.paid.v1`,
or moved a `succeeded` row back to `pending`).
"""

import asyncio
import contextlib
from collections import Counter

import pytest

from shared.contract import topics
from tests.integration.gateway_sim import gateway_sim  # noqa: F401 (fixture)
from tests.integration.helpers import TopicTail, publish, refund_of, wait_until
from tests.integration.service_fixtures import request_with_payment

pytestmark = pytest.mark.integration
SLOW_PAYOUT = dict(PAYOUT_RECLAIM_AFTER_SECONDS="3", PAYOUT_RETRY_BASE_SECONDS="0.5")

# Test-only instrumentation: every claim (attempts goes up) and every outcome written (status leaves
# `submitting`, or a finished row is written again) on a payout row, as it happens.
WATCH_PAYOUT_WRITES = """
CREATE SCHEMA IF NOT EXISTS test_watch;
CREATE TABLE IF NOT EXISTS test_watch.payout_writes (
    refund_id text, old_status text, new_status text, old_attempts int, new_attempts int);
-- SECURITY DEFINER: payout's own role has no grant on the test's schema.
CREATE OR REPLACE FUNCTION test_watch.record_payout_write() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO test_watch.payout_writes VALUES (OLD.refund_id, OLD.status, NEW.status, OLD.attempts, NEW.attempts);
    RETURN NEW;
END $$;
CREATE TRIGGER test_watch_payout_writes AFTER UPDATE ON payout.payouts FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.attempts <> NEW.attempts
          OR OLD.status IN ('succeeded', 'failed'))
    EXECUTE FUNCTION test_watch.record_payout_write();
"""
UNWATCH = "DROP TRIGGER IF EXISTS test_watch_payout_writes ON payout.payouts; DROP SCHEMA IF EXISTS test_watch CASCADE"


@contextlib.contextmanager
def payout_stopped(stack):
    """payout is down inside the block (approved refunds queue up); afterwards payout alone, as configured."""
    stack.stop_service("payout")
    try:
        yield
    finally:
        stack.stop_service("payout@2")
        stack.restart_service("payout")


async def test_two_replicas_with_a_gateway_slower_than_the_lease_pay_and_announce_each_refund_once(
        stack, producer, status_feed, db, gateway_sim):
    batch = [request_with_payment(f"slow{i}") for i in range(32)]
    batch += [request_with_payment("sim-timeout") for _ in range(8)]  # money moves, the answer is lost
    expected = {refund_of(request) for request in batch}
    await asyncio.gather(*(gateway_sim.pay_for(request) for request in batch))
    # Payout's client waits 10 s for an answer: longer than a slow call, shorter than a lost one's.
    slow_payout = SLOW_PAYOUT | gateway_sim.payout_env(timeout_seconds=10)

    async def payouts(condition: str) -> int:
        return await db.fetchval(f"SELECT count(*) FROM payout.payouts WHERE refund_id = ANY($1) AND {condition}",
                                 list(expected))

    await db.execute(UNWATCH)
    await db.execute(WATCH_PAYOUT_WRITES)
    try:
        # A backlog after an outage: payout comes back alone to every approved refund, then scales out.
        with gateway_sim.configured(SIM_LATENCY_MS="4000"), payout_stopped(stack):
            async with TopicTail(stack.bootstrap, topics.APPROVED) as approved, \
                    TopicTail(stack.bootstrap, topics.PAID) as paid:
                await asyncio.gather(*(publish(producer, request) for request in batch))
                await approved.wait_for(
                    lambda _: expected <= {e["data"]["refund_id"] for e in approved.records}, timeout=90)
                stack.start_service("payout", slow_payout)

                async def claimed():
                    return await payouts("true") == len(expected) and await payouts("status = 'submitting'")
                await wait_until(claimed, timeout=60)
                stack.start_service("payout@2", slow_payout)

                async def all_settled():
                    return await payouts("status IN ('succeeded', 'failed')") == len(expected)
                await wait_until(all_settled, timeout=120, every=0.5)
                assert await status_feed.wait_for(
                    lambda: all(status_feed.status_of(r) == "reconciled" for r in expected), timeout=90), \
                    Counter(status_feed.status_of(r) for r in expected)

                async def every_claim_came_back():
                    # A replica that lost its claim to the other may still be calling the gateway for it;
                    # what matters is what it writes when it is done. (With the claim guard a superseded
                    # claim writes nothing and never comes back: then this waits out its deadline.)
                    counts = await db.fetchrow(
                        "SELECT count(*) FILTER (WHERE new_attempts > old_attempts) AS claims, "
                        "count(*) FILTER (WHERE new_status <> 'submitting') AS outcomes "
                        "FROM test_watch.payout_writes WHERE refund_id = ANY($1)", list(expected))
                    return counts["outcomes"] >= counts["claims"]
                with contextlib.suppress(AssertionError):
                    await wait_until(every_claim_came_back, timeout=30, every=0.5)
                await paid.read_to_end()
            writes = await db.fetch("SELECT * FROM test_watch.payout_writes WHERE refund_id = ANY($1)", list(expected))
    finally:
        await db.execute(UNWATCH)

    # One `refund.paid.v1` per refund: distinct events (a republished outbox row keeps its id).
    announced = Counter(refund_id for refund_id, _ in {(e["data"]["refund_id"], e["id"]) for e in paid.records}
                        if refund_id in expected)
    assert {r: n for r, n in announced.items() if n != 1} == {}, "refunds announced paid more than once"
    assert set(announced) == expected
    # No finished row was written again (e.g. `succeeded` back to `pending` by a late `timeout` result).
    assert [tuple(w.values())[:3] for w in writes if w["old_status"] in ("succeeded", "failed")] == []
    rows = dict(await db.fetch("SELECT refund_id, status FROM payout.payouts WHERE refund_id = ANY($1)",
                               list(expected)))
    assert set(rows.values()) == {"succeeded"}
    # Invariant 1 at the gateway: one successful refund per refund, under its one key.
    at_gateway = Counter(dict(await db.fetch(
        "SELECT idempotency_key, count(*) FROM gateway_sim.refunds WHERE idempotency_key = ANY($1) "
        "AND status = 'succeeded' GROUP BY 1", list(expected))))
    assert at_gateway == Counter({refund_id: 1 for refund_id in expected})
