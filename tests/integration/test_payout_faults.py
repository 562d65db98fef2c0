"""A mixed batch through the simulator's faults, over HTTP, ends paid once, failed with reasons, and reconciled.

The simulator runs as its own process (tests/integration/gateway_sim.py); the refunds' payments exist
there first, as the platform's charges made them.
"""

import json
from decimal import Decimal

import httpx
import pytest

from shared.runtime.roles import Role
from tests.integration.gateway_sim import gateway_sim  # noqa: F401 (fixture)
from tests.integration.helpers import publish, refund_of, staff_auth, valid_request, wait_until
from tests.integration.service_fixtures import request_with_payment, service_configured

pytestmark = pytest.mark.integration
# The grace is long: the late outcomes (sim-async, sim-reverse) must come by webhook.
FAST = dict(PAYOUT_RETRY_BASE_SECONDS="0.2", PAYOUT_RETRY_MAX_ATTEMPTS="4", PAYOUT_WEBHOOK_GRACE_SECONDS="600",
            PAYOUT_SETTLEMENT_CURRENCY=json.dumps({"shop-fx": "USD"}))


async def test_mixed_batch_through_gateway_faults_ends_reconciled(stack, producer, status_feed, db, gateway_sim):
    batch = {
        "card_de": valid_request(),
        "paypal_us": request_with_payment("paypal_us", "paypal", currency="USD", region="US"),
        "wallet_jp": request_with_payment("wallet_jp", "wallet", amount=1200, captured=2400, currency="JPY",
                                          region="JP"),
        "5xx": request_with_payment("sim-5xx"),
        "timeout": request_with_payment("sim-timeout"),
        "async": request_with_payment("sim-async"),
        "decline": request_with_payment("sim-decline"),
        "expired": request_with_payment("sim-expired"),
        "down": request_with_payment("sim-down"),
        "reverse": request_with_payment("sim-reverse"),
    }
    ids = {name: refund_of(request) for name, request in batch.items()}
    fx_request = valid_request(amount=2500)
    ids["fx"] = refund_of(fx_request, source="shop-fx")
    for request in [*batch.values(), fx_request]:
        await gateway_sim.pay_for(request)

    with service_configured(stack, "payout", **FAST):
        for request in batch.values():
            await publish(producer, request)
        await publish(producer, fx_request, source="shop-fx")

        async def payouts_final():
            rows = await db.fetch("SELECT * FROM payout.payouts WHERE refund_id = ANY($1) "
                                  "AND status IN ('succeeded', 'failed', 'reversed')", list(ids.values()))
            by_id = {row["refund_id"]: row for row in rows}
            reversed_ = by_id.get(ids["reverse"])
            return by_id if len(by_id) == len(ids) and reversed_["status"] == "reversed" else None
        payouts = await wait_until(payouts_final, timeout=90)
        metrics = httpx.get(f"{stack.service_url('payout')}/metrics", timeout=30).text
        assert 'refund_payout_gateway_errors_total{error="stripe_http_503",gateway="sim",retryable="true"}' \
            in metrics

    row = {name: payouts[refund_id] for name, refund_id in ids.items()}
    assert row["5xx"]["status"] == "succeeded" and row["5xx"]["attempts"] == 3
    assert row["5xx"]["last_error"] == "stripe_http_503"
    assert row["timeout"]["status"] == "succeeded" and row["timeout"]["recovered_by_lookup"]
    # Confirmed by the simulator's webhook, not by asking: one call, no lookup.
    assert row["async"]["status"] == "succeeded" and row["async"]["attempts"] == 1
    assert not row["async"]["recovered_by_lookup"]
    assert (row["decline"]["status"], row["decline"]["failure_reason"]) == ("failed", "declined")
    assert (row["down"]["status"], row["down"]["failure_reason"]) == ("failed", "retries_exhausted:stripe_http_503")
    assert row["down"]["attempts"] == 4
    expired = row["expired"]
    assert (expired["status"], expired["channel"], expired["routed_from"]) == ("succeeded", "bank_transfer", "card")
    assert expired["idempotency_key"] == ids["expired"] + ":bank_transfer"
    assert row["reverse"]["status"] == "reversed"
    fx = row["fx"]
    assert (fx["settlement_currency"], fx["settlement_value"], fx["fx_rate"]) == ("USD", 2703, Decimal("1.0812"))
    assert fx["fx_source"] == "seed-snapshot@2026-11-24"
    # payout's USD figure is its own estimate; the gateway converts (or not) by its own account's settings,
    # and the simulator's `sim` account settles in the refund's currency.
    assert await db.fetchval("SELECT (amount_value, currency, settle_value, settle_currency)::text "
                             "FROM gateway_sim.refunds WHERE idempotency_key = $1", ids["fx"]) == "(2500,EUR,2500,EUR)"
    for name in ("card_de", "paypal_us", "wallet_jp", "timeout", "async", "expired", "fx"):
        assert row[name]["status"] == "succeeded" and row[name]["eta"] is not None, name

    # Invariant 1 at the gateway: one refund per key, one call for the timed-out one.
    calls = dict(await db.fetch("SELECT idempotency_key, refund_calls FROM gateway_sim.refunds "
                                "WHERE idempotency_key LIKE ANY($1)", [i + "%" for i in ids.values()]))
    assert calls[ids["timeout"]] == 1
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE idempotency_key LIKE ANY($1) "
                             "AND status = 'succeeded'", [i + "%" for i in ids.values()]) == 8

    paid = {name for name, r in row.items() if r["status"] in ("succeeded", "reversed")}

    async def reconciled():
        states = dict(await db.fetch("SELECT refund_id, coalesce(category, state) FROM reconcile.payouts "
                                     "WHERE refund_id = ANY($1)", [ids[name] for name in paid]))
        # The fx refund: payout expects USD, the gateway settled EUR (see above): a discrepancy for finance.
        want = {ids[name]: "matched" for name in paid} | {ids["reverse"]: "reversed", ids["fx"]: "currency_mismatch"}
        return states == want
    await wait_until(reconciled, timeout=60)
    assert await status_feed.wait_for(
        lambda: all(status_feed.status_of(ids[name]) == "reconciled" for name in paid - {"reverse", "fx"})
        and status_feed.status_of(ids["decline"]) == "failed" and status_feed.status_of(ids["down"]) == "failed",
        timeout=60)
    assert await db.fetchval("SELECT (amount_value, currency, expected_value, expected_currency)::text "
                             "FROM reconcile.payouts WHERE refund_id = $1", ids["fx"]) == "(2500,EUR,2703,USD)"
    assert await db.fetchval("SELECT count(*) FROM reconcile.discrepancies WHERE refund_id = $1 "
                             "AND category = 'reversed' AND status = 'open'", ids["reverse"]) == 1
    # The reversal is what the customer and the platform see, on the feed and the tracking API.
    assert await status_feed.wait_for(lambda: status_feed.status_of(ids["reverse"]) == "reversed", timeout=30), \
        status_feed.history[ids["reverse"]]
    tracked = httpx.get(f"{stack.service_url('notify')}/v1/refunds/{ids['reverse']}",
                        headers=staff_auth("ops-1", Role.REVIEWER), timeout=30).json()
    assert (tracked["status"], tracked["terminal"], tracked["progress"], tracked["eta"]) == ("reversed", True, 100, None)

    # Invariant 5: paid = matched settlement + open discrepancies, to the minor unit.
    ledger = httpx.get(f"{stack.service_url('reconcile')}/v1/ledger", headers=staff_auth("fin-bo", Role.FINANCE_LEAD),
                       timeout=30).json()["currencies"]
    assert ledger and all(entry["imbalance"] == 0 for entry in ledger), ledger
    reversed_money = await db.fetchval("SELECT (amount_value, currency)::text FROM payout.payouts WHERE refund_id = $1",
                                       ids["reverse"])
    value, currency = reversed_money.strip("()").split(",")
    assert next(e for e in ledger if e["currency"] == currency)["reversed"] >= int(value)
