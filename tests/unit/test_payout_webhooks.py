"""Gateway webhooks as payout reads them: signatures checked with the gateways' own packages, outcomes mapped.

Stripe events are signed with `stripe.WebhookSignature.generate_signature_header` (what the
`stripe` package documents for tests), Adyen items with `Adyen.util.generate_notification_sig`.
"""

import json
import time

import pytest
import stripe
from Adyen.util import generate_notification_sig

from services.payout.adyen_gateway import AdyenGatewayAdapter
from services.payout.domain import after_gateway_event
from services.payout.gateway import GatewayEvent, WebhookRejected
from services.payout.stripe_gateway import StripeGatewayAdapter
from shared.runtime.gateway_routes import GatewayRoute

SECRET = "whsec_test_payout"
HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
STRIPE = StripeGatewayAdapter("stripe", GatewayRoute(kind="stripe", base_url="http://127.0.0.1:9/stripe",
                                                     api_key="sk_test", webhook_secret=SECRET))
ADYEN = AdyenGatewayAdapter("adyen", GatewayRoute(kind="adyen", base_url="http://127.0.0.1:9/adyen", api_key="k",
                                                  hmac_key=HMAC_KEY, merchant_account="PipelineECOM"))


def stripe_event(event_type: str = "charge.refund.updated", status: str = "succeeded",
                 failure_reason: str | None = None, event_id: str = "evt_1") -> bytes:
    refund = {"id": "re_1", "object": "refund", "amount": 2500, "currency": "eur", "payment_intent": "pi_1",
              "status": status, "failure_reason": failure_reason, "metadata": {"refund_key": "rf_1"}}
    return json.dumps({"id": event_id, "object": "event", "type": event_type, "created": int(time.time()),
                       "livemode": False, "data": {"object": refund}}).encode()


def signed(payload: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict:
    return {"stripe-signature": stripe.WebhookSignature.generate_signature_header(payload.decode(), secret,
                                                                                    timestamp)}


def test_a_signed_stripe_refund_update_is_its_outcome_under_the_event_id():
    payload = stripe_event()
    assert STRIPE.events(payload, signed(payload)) == [GatewayEvent("evt_1", "rf_1", "re_1", "succeeded", None)]
    failed = stripe_event("refund.failed", "failed", "lost_or_stolen_card", "evt_2")
    assert STRIPE.events(failed, signed(failed)) == [
        GatewayEvent("evt_2", "rf_1", "re_1", "failed", "lost_or_stolen_card")]


@pytest.mark.parametrize(("headers", "reason"), [
    (lambda p: signed(p, secret="whsec_someone_else"), "signature"),
    (lambda p: signed(p + b" "), "signature"),  # the body was changed after signing
    (lambda p: {}, "signature"),
    (lambda p: signed(p, timestamp=int(time.time()) - 301), "timestamp"),
])
def test_a_stripe_event_not_signed_with_our_secret_or_too_old_is_rejected(headers, reason):
    payload = stripe_event()
    with pytest.raises(WebhookRejected) as rejected:
        STRIPE.events(payload, headers(payload))
    assert rejected.value.reason == reason


def test_stripe_events_that_carry_no_outcome_are_left_out():
    for payload in (stripe_event(status="pending"), stripe_event("refund.created"),
                    stripe_event("payment_intent.succeeded")):
        assert STRIPE.events(payload, signed(payload)) == []


def adyen_item(event_code: str = "REFUND", success: str = "true", reason: str = "",
               merchant: str = "PipelineECOM", key: str = HMAC_KEY) -> dict:
    item = {"eventCode": event_code, "success": success, "pspReference": "ADYREF1", "originalReference": "PSP1",
            "merchantAccountCode": merchant, "merchantReference": "rf_1",
            "amount": {"value": 2500, "currency": "EUR"}, "eventDate": "2026-11-24T10:00:00+01:00",
            "reason": reason}
    item["additionalData"] = {"hmacSignature": generate_notification_sig(item, key).decode()}
    return item


def notification(*items: dict) -> bytes:
    return json.dumps({"live": "false",
                       "notificationItems": [{"NotificationRequestItem": item} for item in items]}).encode()


def test_signed_adyen_items_are_their_outcomes_under_code_psp_and_success():
    events = ADYEN.events(notification(adyen_item(), adyen_item("REFUND", "false", "declined"),
                                       adyen_item("REFUNDED_REVERSED")), {})
    assert events == [GatewayEvent("REFUND:ADYREF1:true", "rf_1", "ADYREF1", "succeeded", None),
                      GatewayEvent("REFUND:ADYREF1:false", "rf_1", "ADYREF1", "failed", "declined"),
                      GatewayEvent("REFUNDED_REVERSED:ADYREF1:true", "rf_1", "ADYREF1", "reversed",
                                   "refunded_reversed")]
    assert ADYEN.events(notification(adyen_item("AUTHORISATION")), {}) == []


def test_an_adyen_notification_with_one_bad_item_is_rejected_whole():
    forged = adyen_item(key="00" * 32)
    tampered = adyen_item()
    tampered["amount"] = {"value": 999999, "currency": "EUR"}
    unsigned = adyen_item()
    del unsigned["additionalData"]
    for bad, reason in ((forged, "signature"), (tampered, "signature"), (unsigned, "signature"),
                        (adyen_item(merchant="SomeoneElseECOM"), "merchant_account")):
        with pytest.raises(WebhookRejected) as rejected:
            ADYEN.events(notification(adyen_item(), bad), {})
        assert rejected.value.reason == reason
    with pytest.raises(WebhookRejected):
        ADYEN.events(b"[accepted]", {})


@pytest.mark.parametrize(("payout", "event", "change"), [
    ("pending", "succeeded", "paid"), ("confirming", "succeeded", "paid"),
    ("confirming", "failed", "failed"), ("confirming", "reversed", "paid_then_reversed"),
    ("succeeded", "failed", "reversed"), ("succeeded", "reversed", "reversed"),
    ("succeeded", "succeeded", None), ("failed", "succeeded", None), ("failed", "failed", None),
    ("reversed", "reversed", None), ("reversed", "failed", None),
])
def test_a_finished_payout_changes_only_by_the_reversal_of_a_paid_one(payout, event, change):
    assert after_gateway_event(payout, event) == change
