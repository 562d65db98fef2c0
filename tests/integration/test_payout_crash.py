"""Invariant 1 under the worst crash: payout SIGKILLed after the gateway paid, before the commit."""

import pytest

from devstack.processes import pid_alive
from tests.integration.helpers import publish, refund_of, wait_until
from tests.integration.service_fixtures import payout_configured, request_with_payment

pytestmark = pytest.mark.integration


async def test_killed_between_gateway_answer_and_commit_pays_once(stack, producer, status_feed, db):
    request = request_with_payment("crash")
    refund_id, payment_id = refund_of(request), request["payment"]["id"]

    with payout_configured(stack, PAYOUT_FAULT_KILL_AFTER_GATEWAY_FOR=payment_id):
        victim = stack.state["services"]["payout"]["pid"]
        await publish(producer, request)

        async def died():
            return not pid_alive(victim)
        await wait_until(died, timeout=60)
        # The gateway paid; payout's commit never happened.
        at_gateway = await db.fetchrow("SELECT * FROM gateway_sim.refunds WHERE idempotency_key = $1", refund_id)
        assert at_gateway["status"] == "succeeded" and at_gateway["refund_calls"] == 1
        assert await db.fetchval("SELECT status FROM payout.payouts WHERE refund_id = $1", refund_id) == "submitting"
        stack.kill_service("payout")  # the record of the dead process
    # payout_configured restarted payout without the fault

    async def settled():
        return await db.fetchrow("SELECT * FROM payout.payouts WHERE refund_id = $1 AND status = 'succeeded'",
                                 refund_id)
    payout = await wait_until(settled, timeout=60)
    assert payout["recovered_by_lookup"] and payout["attempts"] == 2
    assert payout["gateway_ref"] == at_gateway["gateway_ref"]
    at_gateway = await db.fetchrow("SELECT * FROM gateway_sim.refunds WHERE idempotency_key = $1", refund_id)
    assert at_gateway["refund_calls"] == 1, "recovery called refund again instead of asking by key"
    assert at_gateway["lookups"] >= 1
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.settlement_lines WHERE gateway_ref = $1",
                             payout["gateway_ref"]) == 1
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) in ("succeeded", "reconciled"),
                                      timeout=60)
