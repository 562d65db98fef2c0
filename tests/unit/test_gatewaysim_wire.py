"""The simulator's pure pieces: form decoding, FX with spread, fees, webhook signatures, report layouts."""

from datetime import UTC, datetime
from decimal import Decimal

import Adyen.util
import orjson
import stripe

from gatewaysim import fx, objects, reports
from gatewaysim.faults import SimFaults, fee
from gatewaysim.ledger import SettlementLine
from gatewaysim.settings import Account
from gatewaysim.web import decode_form
from gatewaysim.webhooks import signed_request
from services.reconcile.settlement_files import parse

RATES = {"EUR/USD": Decimal("1.0812")}
ROW = {"account": "acme", "personality": "adyen", "gateway_ref": "ABCDEFGHIJKLMNOP", "payment_id": "pi_1",
       "idempotency_key": "rf_1", "amount_value": 2500, "currency": "EUR", "status": "succeeded",
       "failure_reason": None, "metadata": {"merchantAccount": "AcmeEU", "reference": "rf_1"},
       "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}


def test_stripe_form_bodies_decode_nested_keys_and_lists():
    body = b"amount=100&metadata%5Brefund_key%5D=k&metadata[x]=&expand[]=a&expand[]=b&parameters[interval_end]=5"
    assert decode_form(body) == {"amount": "100", "metadata": {"refund_key": "k", "x": ""}, "expand": ["a", "b"],
                                 "parameters": {"interval_end": "5"}}


def test_fx_settles_at_the_rate_worsened_by_the_spread():
    assert fx.settle(2500, "EUR", "USD", RATES, 0) == (2703, "USD")  # 27.03, half-even
    assert fx.settle(2500, "EUR", "USD", RATES, 50) == (2717, "USD")  # 25 * 1.0812 * 1.005 = 27.1653
    assert fx.settle(2703, "USD", "EUR", RATES, 0) == (2500, "EUR")  # the inverse pair is derived
    assert fx.settle(1200, "JPY", "USD", RATES, 50) == (1200, "JPY")  # no rate: settles as it is
    assert fx.settle(2500, "EUR", None, RATES, 50) == (2500, "EUR")


def test_fee_only_with_sim_fee_at_least_one_minor_unit():
    faults = SimFaults(fee_bps=150)
    assert fee("pi_1_sim-fee", 2717, faults) == 41
    assert fee("pi_1_sim-fee", 10, faults) == 1
    assert fee("pi_1", 2717, faults) == 0
    assert fee("pi_1", 2717, SimFaults(fee_percent=100)) == 41


def test_stripe_webhooks_verify_with_the_official_package():
    account = Account(personality="stripe", api_key="sk", webhook_secret="whsec_test")
    _, event = objects.stripe_event({**ROW, "personality": "stripe"}, "charge.refund.updated", ROW["created_at"])
    raw, headers = signed_request(account, orjson.dumps(event).decode())
    verified = stripe.Webhook.construct_event(raw, headers["Stripe-Signature"], "whsec_test")
    assert (verified.type, verified.data.object.id, verified.data.object.status) == (
        "charge.refund.updated", "ABCDEFGHIJKLMNOP", "succeeded")


def test_adyen_notifications_verify_with_the_official_package():
    key = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
    account = Account(personality="adyen", api_key="k", webhook_secret=key)
    _, notification = objects.adyen_notification(ROW, "REFUND", True, None, ROW["created_at"])
    raw, _ = signed_request(account, orjson.dumps(notification).decode())
    signed = orjson.loads(raw)
    item = signed["notificationItems"][0]["NotificationRequestItem"]
    assert Adyen.util.is_valid_hmac_notification(signed, key)
    assert (item["eventCode"], item["success"], item["merchantReference"], item["originalReference"]) == (
        "REFUND", "true", "rf_1", "pi_1")


def test_report_lines_carry_their_own_time_and_batch():
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    line = SettlementLine(7, "ABCDEFGHIJKLMNOP", 2717, "USD", 41, "refund", at, 3)
    stripe_csv, adyen_csv = reports.render("stripe", [line]), reports.render("adyen", [line])
    assert "2026-01-02 03:04:05" in stripe_csv and "2026-01-02 03:04:05" in adyen_csv
    [parsed] = parse("adyen", adyen_csv).lines
    assert (parsed.txn_id, parsed.amount_value, parsed.fee_value) == ("3:ABCDEFGHIJKLMNOP:Refunded", 2717, 41)
    [parsed] = parse("stripe", stripe_csv).lines
    assert (parsed.amount_value, parsed.fee_value, parsed.currency) == (2717, 41, "USD")
