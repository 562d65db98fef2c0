"""Payout at the gateway boundary: the simulator is reached only over HTTP, outcomes come by signed webhook.

Ground truth of money moved: the simulator's ledger (`gateway_sim.refunds`), read as a superuser.
"""

import json
import time
from collections import Counter

import httpx
import pytest
import stripe
from Adyen.util import generate_notification_sig

from shared.contract import topics
from tests.integration.gateway_sim import MERCHANT, gateway_sim, on_gateway  # noqa: F401 (fixture)
from tests.integration.helpers import TopicTail, publish, refund_of, valid_request, wait_until
from tests.integration.service_fixtures import request_with_payment, service_configured

pytestmark = pytest.mark.integration
# Long enough that only a webhook can settle a `pending` refund inside a test.
WEBHOOKS_ONLY = dict(PAYOUT_WEBHOOK_GRACE_SECONDS="600", PAYOUT_RETRY_BASE_SECONDS="0.2")


async def payout_row(db, refund_id: str, condition: str = "true"):
    return await db.fetchrow(f"SELECT * FROM payout.payouts WHERE refund_id = $1 AND {condition}", refund_id)


def stripe_signature(body: str, secret: str, at: int | None = None) -> dict:
    return {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body, secret, at),
            "Content-Type": "application/json"}


async def test_a_payment_on_a_gateway_without_a_route_is_never_paid(stack, producer, status_feed, db, gateway_sim):
    request = on_gateway(valid_request(), "nowhere")
    refund_id = refund_of(request)
    await publish(producer, request)

    async def failed():
        return await payout_row(db, refund_id, "status = 'failed'")
    row = await wait_until(failed, timeout=60)
    assert row["failure_reason"] == "gateway_not_configured" and row["gateway_ref"] is None
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "failed", timeout=60)
    assert status_feed.latest[refund_id]["reason_codes"] == ["gateway_not_configured"]
    assert await db.fetchval("SELECT count(*) FROM gateway_sim.refunds WHERE idempotency_key LIKE $1",
                             refund_id + "%") == 0
    metrics = httpx.get(f"{stack.service_url('payout')}/metrics", timeout=30).text
    assert 'refund_payout_unrouted_total{gateway="nowhere"} 1.0' in metrics


async def test_webhooks_with_a_bad_signature_an_old_timestamp_or_a_replayed_id_change_nothing(
        stack, producer, db, gateway_sim):
    # `quiet` never delivers its webhooks: the test delivers the simulator's own event, forged and not.
    request = await gateway_sim.pay_for(on_gateway(request_with_payment("sim-async"), "quiet"))
    refund_id = refund_of(request)
    secret = gateway_sim.accounts["quiet"]["webhook_secret"]
    url = f"{stack.service_url('payout')}/v1/gateway-events/quiet"
    with service_configured(stack, "payout", **WEBHOOKS_ONLY):
        async with TopicTail(stack.bootstrap, topics.PAID) as paid, httpx.AsyncClient(timeout=30) as http:
            await publish(producer, request)

            async def confirming():
                return await payout_row(db, refund_id, "status = 'confirming'")
            before = await wait_until(confirming, timeout=60)

            async def undelivered_event():
                return await db.fetchval(
                    "SELECT body FROM gateway_sim.webhook_outbox WHERE account = 'quiet' "
                    "AND (body::jsonb #>> '{data,object,metadata,refund_key}') = $1", refund_id)
            body = await wait_until(undelivered_event, timeout=30)
            assert json.loads(body)["data"]["object"]["status"] == "succeeded"

            rejected = [
                await http.post(url, content=body, headers=stripe_signature(body, "whsec_not_the_gateways")),
                await http.post(url, content=body, headers=stripe_signature(body, secret, int(time.time()) - 600)),
                await http.post(url, content=body.replace("succeeded", "failed"), headers=stripe_signature(body, secret)),
                await http.post(url, content=body, headers={"Content-Type": "application/json"}),
            ]
            assert [answer.status_code for answer in rejected] == [400, 400, 400, 400], [a.text for a in rejected]
            assert dict(await payout_row(db, refund_id)) == dict(before)
            assert await db.fetchval("SELECT count(*) FROM payout.gateway_events WHERE gateway = 'quiet'") == 0

            accepted = await http.post(url, content=body, headers=stripe_signature(body, secret))
            assert accepted.status_code == 200, accepted.text
            settled = await payout_row(db, refund_id)
            assert settled["status"] == "succeeded" and settled["attempts"] == 1
            assert not settled["recovered_by_lookup"]
            replayed = await http.post(url, content=body, headers=stripe_signature(body, secret))
            assert replayed.status_code == 200, replayed.text
            assert dict(await payout_row(db, refund_id)) == dict(settled)

            assert (await http.post(f"{stack.service_url('payout')}/v1/gateway-events/nowhere", content=body,
                                    headers=stripe_signature(body, secret))).status_code == 404
            await paid.wait_for(lambda e: e["data"]["refund_id"] == refund_id, timeout=30)
            await paid.read_to_end()
    events = await db.fetch("SELECT * FROM payout.gateway_events WHERE refund_id = $1", refund_id)
    assert [(e["gateway"], e["effect"]) for e in events] == [("quiet", "paid")]
    assert [e["data"]["refund_id"] for e in paid.records].count(refund_id) == 1


async def test_an_adyen_notification_signed_with_another_key_or_for_another_merchant_changes_nothing(
        stack, db, gateway_sim):
    item = {"eventCode": "REFUND", "success": "true", "pspReference": "ADYFORGED0000001",
            "originalReference": "PSP", "merchantAccountCode": MERCHANT, "merchantReference": "rf_forged",
            "amount": {"value": 2500, "currency": "EUR"}, "eventDate": "2026-11-24T10:00:00+00:00", "reason": ""}
    hmac_key = gateway_sim.accounts["adyen"]["webhook_secret"]

    def notification(item: dict, key: str) -> dict:
        signed = dict(item, additionalData={"hmacSignature": generate_notification_sig(item, key).decode()})
        return {"live": "false", "notificationItems": [{"NotificationRequestItem": signed}]}
    url = f"{stack.service_url('payout')}/v1/gateway-events/adyen"
    async with httpx.AsyncClient(timeout=30) as http:
        forged = await http.post(url, json=notification(item, "00" * 32))
        elsewhere = await http.post(url, json=notification(dict(item, merchantAccountCode="OtherECOM"), hmac_key))
        ours = await http.post(url, json=notification(item, hmac_key))
    assert (forged.status_code, elsewhere.status_code) == (400, 400)
    # Ours, but for no payout of ours: acknowledged (so the gateway stops), recorded, nothing paid.
    assert (ours.status_code, ours.text) == (200, "[accepted]")
    assert await db.fetchval("SELECT effect FROM payout.gateway_events WHERE gateway = 'adyen' "
                             "AND event_id = 'REFUND:ADYFORGED0000001:true'") == "no_payout"


async def test_a_webhook_that_never_comes_is_covered_by_a_lookup_after_the_grace_period(
        stack, producer, db, gateway_sim):
    request = await gateway_sim.pay_for(on_gateway(request_with_payment("sim-async"), "quiet"))
    refund_id = refund_of(request)
    with service_configured(stack, "payout", PAYOUT_WEBHOOK_GRACE_SECONDS="2"):
        await publish(producer, request)

        async def settled():
            return await payout_row(db, refund_id, "status = 'succeeded'")
        row = await wait_until(settled, timeout=60)
    assert row["recovered_by_lookup"] and row["attempts"] >= 2
    at_gateway = await db.fetchrow("SELECT * FROM gateway_sim.refunds WHERE account = 'quiet' "
                                   "AND idempotency_key = $1", refund_id)
    assert (at_gateway["status"], at_gateway["refund_calls"], at_gateway["gateway_ref"]) == \
        ("succeeded", 1, row["gateway_ref"])
    assert at_gateway["lookups"] >= 1
    assert await db.fetchval("SELECT count(*) FROM payout.gateway_events WHERE refund_id = $1", refund_id) == 0


@pytest.mark.parametrize("gateway", ["stripe", "adyen"])
async def test_late_outcomes_and_reversals_arrive_by_webhook(stack, producer, status_feed, db, gateway_sim, gateway):
    batch = {name: await gateway_sim.pay_for(on_gateway(request_with_payment(token), gateway))
             for name, token in (("paid", "plain"), ("async", "sim-async"), ("reverse", "sim-reverse"),
                                 ("decline", "sim-decline"), ("expired", "sim-expired"))}
    ids = {name: refund_of(request) for name, request in batch.items()}
    with service_configured(stack, "payout", **WEBHOOKS_ONLY):
        for request in batch.values():
            await publish(producer, request)

        async def all_final():
            rows = await db.fetch("SELECT * FROM payout.payouts WHERE refund_id = ANY($1)", list(ids.values()))
            by_id = {row["refund_id"]: row for row in rows}
            done = by_id.get(ids["reverse"]) and by_id[ids["reverse"]]["status"] == "reversed"
            return by_id if done and all(row["status"] in ("succeeded", "failed", "reversed")
                                         for row in rows) and len(rows) == len(ids) else None
        rows = await wait_until(all_final, timeout=90)
        assert await status_feed.wait_for(lambda: status_feed.status_of(ids["reverse"]) == "reversed", timeout=60), \
            status_feed.history.get(ids["reverse"])
    row = {name: rows[refund_id] for name, refund_id in ids.items()}
    assert (row["paid"]["status"], row["async"]["status"]) == ("succeeded", "succeeded")
    assert (row["decline"]["status"], row["decline"]["failure_reason"]) == ("failed", "declined")
    # A dead card: re-routed to a bank transfer under a new key, which pays.
    expired = row["expired"]
    assert (expired["status"], expired["channel"], expired["routed_from"]) == ("succeeded", "bank_transfer", "card")
    assert row["reverse"]["reversed_at"] is not None
    # Nothing was asked by key: what was not in the create call's answer came by webhook.
    assert not any(r["recovered_by_lookup"] for r in rows.values())
    assert row["async"]["attempts"] == 1
    effects = dict(await db.fetch("SELECT refund_id, string_agg(effect, ',' ORDER BY seq) FROM payout.gateway_events "
                                  "WHERE gateway = $1 AND refund_id = ANY($2) GROUP BY 1", gateway, list(ids.values())))
    by_webhook = {name: effects.get(refund_id) for name, refund_id in ids.items()}
    if gateway == "stripe":  # a create call's own answer gets no webhook
        assert by_webhook == {"paid": None, "async": "paid", "reverse": "reversed", "decline": None, "expired": None}
    else:  # Adyen answers `received`: every outcome is a notification
        assert by_webhook == {"paid": "paid", "async": "paid", "reverse": "paid,reversed", "decline": "failed",
                              "expired": "rerouted,paid"}
    assert status_feed.latest[ids["reverse"]]["reason_codes"][0] == "reversed"
    # Invariant 1 at the gateway: one refund per key, the one payout recorded; the dead card's stays failed.
    keys = {row["idempotency_key"] for row in rows.values()}
    at_gateway = await db.fetch("SELECT idempotency_key, gateway_ref, status FROM gateway_sim.refunds "
                                "WHERE account = $1 AND idempotency_key LIKE ANY($2)", gateway,
                                [refund_id + "%" for refund_id in ids.values()])
    assert Counter(r["idempotency_key"] for r in at_gateway) == Counter(keys | {ids["expired"]})
    assert {r["idempotency_key"]: r["gateway_ref"] for r in at_gateway if r["idempotency_key"] in keys} == \
        {row["idempotency_key"]: row["gateway_ref"] for row in rows.values()}
    assert {r["idempotency_key"]: r["status"] for r in at_gateway}[ids["expired"]] == "failed"
    assert Counter(r["idempotency_key"].split(":")[0] for r in at_gateway if r["status"] in ("succeeded",
                                                                                               "reversed")) == \
        Counter({ids[name]: 1 for name in ("paid", "async", "reverse", "expired")})
