"""Assertions on what a batch of refunds ended as, shared by the fault and scaling tests."""

from shared.contract.lifecycle import TERMINAL_STATUSES

TERMINAL = {status.value for status in TERMINAL_STATUSES}
# Statuses a refund can only reach after payout ran it through the gateway.
PAID_OUT = {"succeeded", "failed", "reconciled", "discrepancy"}


async def assert_every_refund_terminal_and_paid_at_most_once(status_feed, db, expected: set[str],
                                                             timeout: float = 180) -> dict[str, str]:
    """Wait until every refund in `expected` is terminal; check money safety; return refund -> status."""
    done = await status_feed.wait_for(lambda: expected <= status_feed.terminal_at.keys(), timeout=timeout)
    missing = expected - status_feed.terminal_at.keys()
    assert done, f"{len(missing)} refunds not terminal, e.g. {[status_feed.status_of(r) for r in list(missing)[:5]]}"
    final = {refund_id: status_feed.status_of(refund_id) for refund_id in expected}
    assert set(final.values()) <= TERMINAL, set(final.values())

    ids = list(expected)
    attempts = dict(await db.fetch(
        "SELECT idempotency_key, count(*) FROM gateway_sim.refunds WHERE idempotency_key = ANY($1) GROUP BY 1", ids))
    assert not {r: n for r, n in attempts.items() if n > 1}, "a refund reached the gateway twice"
    # Exactly one gateway refund for each refund payout handled, none for the others.
    assert set(attempts) == {r for r, status in final.items() if status in PAID_OUT}
    succeeded = await db.fetchval(
        "SELECT count(*) FROM gateway_sim.refunds WHERE idempotency_key = ANY($1) AND status = 'succeeded'", ids)
    assert succeeded == await db.fetchval(
        "SELECT count(*) FROM payout.payouts WHERE refund_id = ANY($1) AND status = 'succeeded'", ids)
    return final
