"""Payout's Stripe adapter against Stripe's API mock server, alone and inside the pipeline."""

import json
import uuid

import httpx
import pytest

from services.payout.gateway import GatewayError, RefundOrder
from services.payout.stripe_gateway import StripeGatewayAdapter
from shared.runtime.gateway_routes import GatewayRoute
from shared.runtime.roles import Role
from tests.integration.helpers import publish, refund_of, staff_auth, valid_request, wait_until
from tests.integration.service_fixtures import service_configured
from tests.integration.stripe_mock import stripe_mock  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def route(base_url: str, api_key: str = "sk_test_pipeline", **settings) -> dict:
    return {"kind": "stripe", "base_url": base_url, "api_key": api_key, "webhook_secret": "whsec_pipeline", **settings}


def stripe_at(base_url: str, api_key: str = "sk_test_pipeline", **settings) -> StripeGatewayAdapter:
    return StripeGatewayAdapter("stripe", GatewayRoute.model_validate(route(base_url, api_key, **settings)))


async def test_refund_through_the_stripe_api(stripe_mock):
    gateway = stripe_at(stripe_mock)
    result = await gateway.refund(RefundOrder("rf_" + uuid.uuid4().hex, "pi_3MtwBwLkdIwHu7ix28a3tqPa", 2500, "EUR",
                                              "card"))
    assert result.status == "succeeded" and result.gateway_ref.startswith("re_")
    # The mock's refunds carry no metadata of ours: the key is unknown, so a retry would create (idempotently).
    assert await gateway.lookup("rf_unknown", "pi_3MtwBwLkdIwHu7ix28a3tqPa") is None


async def test_stripe_refusals_are_final_and_outages_retryable(stripe_mock):
    with pytest.raises(GatewayError) as refused:
        await stripe_at(stripe_mock, "not-a-key").refund(RefundOrder("rf_x", "ch_1", 100, "EUR", "card"))
    assert not refused.value.retryable and refused.value.reason == "stripe_AuthenticationError"
    with pytest.raises(GatewayError) as down:
        await stripe_at("http://127.0.0.1:9", timeout_seconds=2).refund(RefundOrder("rf_x", "ch_1", 100, "EUR", "card"))
    assert down.value.retryable


async def test_a_stripe_payment_is_paid_by_stripe_and_matched_from_its_balance_report(stack, producer, db,
                                                                                      stripe_mock):
    request = valid_request()
    request["payment"] = dict(request["payment"], gateway="stripe", id="pi_" + uuid.uuid4().hex[:24])
    refund_id = refund_of(request)
    with service_configured(stack, "payout", GATEWAY_ROUTES=json.dumps({"stripe": route(stripe_mock)})):
        await publish(producer, request)

        async def paid():
            return await db.fetchrow("SELECT * FROM payout.payouts WHERE refund_id = $1 AND status = 'succeeded'",
                                     refund_id)
        payout = await wait_until(paid, timeout=60)
    assert payout["gateway"] == "stripe" and payout["gateway_ref"].startswith("re_")
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE idempotency_key = $1", refund_id) == 0

    # Stripe's itemized balance report for the refund, uploaded by finance, matches it.
    report = ("balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,reporting_category,"
              f"source_id,description\ntxn_{uuid.uuid4().hex[:16]},2026-11-24 10:00:00,2026-11-26 00:00:00,eur,"
              f"-25.00,0.00,-25.00,refund,{payout['gateway_ref']},REFUND\n")
    async with httpx.AsyncClient(base_url=stack.service_url("reconcile"), timeout=30) as http:
        upload = await http.post("/v1/settlements?format=stripe&gateway=stripe", content=report,
                                 headers=staff_auth("fin-cy", Role.FINANCE_LEAD))
    assert upload.status_code == 200 and upload.json()["lines_new"] == 1, upload.text

    async def matched():
        return await db.fetchval("SELECT state FROM reconcile.payouts WHERE refund_id = $1", refund_id) == "matched"
    await wait_until(matched, timeout=60)
