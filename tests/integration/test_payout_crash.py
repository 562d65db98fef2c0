"""Invariant 1 under the worst crash: payout SIGKILLed after the gateway paid, before the commit.

A refund whose gateway is down rides along: its retry schedule lives in its
row, so the restarted process carries on retrying it.
"""

import pytest

from devstack.processes import pid_alive
from tests.integration.gateway_sim import gateway_sim  # noqa: F401 (fixture)
from tests.integration.helpers import publish, refund_of, wait_until
from tests.integration.service_fixtures import request_with_payment, service_configured

pytestmark = pytest.mark.integration


async def test_killed_between_gateway_answer_and_commit_pays_once(stack, producer, status_feed, db, gateway_sim):
    request = await gateway_sim.pay_for(request_with_payment("crash"))
    retrying = await gateway_sim.pay_for(request_with_payment("sim-down"))
    refund_id, payment_id, retrying_id = refund_of(request), request["payment"]["id"], refund_of(retrying)

    with service_configured(stack, "payout", PAYOUT_FAULT_KILL_AFTER_GATEWAY_FOR=payment_id):
        victim = stack.state["services"]["payout"]["pid"]
        await publish(producer, retrying)

        async def retry_scheduled():
            return await db.fetchrow("SELECT * FROM payout.payouts WHERE refund_id = $1 AND status = 'pending' "
                                     "AND last_error = 'stripe_http_503'", retrying_id)
        before_crash = await wait_until(retry_scheduled, timeout=60)
        assert before_crash["next_attempt_at"] > before_crash["claimed_at"]
        await publish(producer, request)

        async def died():
            return not pid_alive(victim)
        await wait_until(died, timeout=60)
        attempts_at_kill = await db.fetchval("SELECT attempts FROM payout.payouts WHERE refund_id = $1", retrying_id)
        # The gateway paid (its own process, its own ledger); payout's commit never happened.
        at_gateway = await db.fetchrow("SELECT * FROM gateway_sim.refunds WHERE idempotency_key = $1", refund_id)
        assert at_gateway["status"] == "succeeded" and at_gateway["refund_calls"] == 1
        assert await db.fetchval("SELECT status FROM payout.payouts WHERE refund_id = $1", refund_id) == "submitting"
        stack.kill_service("payout")  # the record of the dead process
    # service_configured restarted payout without the fault

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

    async def retried_after_restart():
        return await db.fetchval("SELECT attempts FROM payout.payouts WHERE refund_id = $1 AND attempts > $2",
                                 retrying_id, attempts_at_kill)
    await wait_until(retried_after_restart, timeout=60)
