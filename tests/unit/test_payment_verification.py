"""Payment verification, pure: how a refund and its payment at the gateway are compared, table-driven."""

import pytest

from services.approval.domain import (
    PAYMENT_MISMATCH, GatewayPayment, check_payment, counted_codes, mismatch_codes, payment_mismatch, recheck_delay,
)
from tests.unit.test_approval_policy import refund

M = PAYMENT_MISMATCH

SCENARIOS = [
    # (what, refund amount, claimed captured, currency, the gateway's payment, expected codes)
    ("agrees exactly", 2500, 10000, "EUR", GatewayPayment("EUR", 10000, 0), ()),
    ("full refund of an untouched payment", 10000, 10000, "EUR", GatewayPayment("EUR", 10000, 0), ()),
    ("gateway captured more than claimed", 2500, 10000, "EUR", GatewayPayment("EUR", 12000, 0), ()),
    ("earlier partial refunds leave enough", 2500, 10000, "EUR", GatewayPayment("EUR", 10000, 7500), ()),
    ("captured less than claimed", 2500, 10000, "EUR", GatewayPayment("EUR", 9000, 0),
     (M, f"{M}:captured 90.00 EUR at gateway, 100.00 EUR claimed")),
    ("another currency", 2500, 10000, "EUR", GatewayPayment("USD", 10000, 0),
     (M, f"{M}:currency USD at gateway, EUR claimed")),
    ("already refunded in full", 2500, 10000, "EUR", GatewayPayment("EUR", 10000, 10000),
     (M, f"{M}:left 0.00 EUR at gateway, 25.00 EUR asked")),
    ("less left than asked", 2500, 10000, "EUR", GatewayPayment("EUR", 10000, 8000),
     (M, f"{M}:left 20.00 EUR at gateway, 25.00 EUR asked")),
    ("captured less and too little left", 2500, 10000, "EUR", GatewayPayment("EUR", 9000, 7000),
     (M, f"{M}:captured 90.00 EUR at gateway, 100.00 EUR claimed", f"{M}:left 20.00 EUR at gateway, 25.00 EUR asked")),
    ("refunded more than captured (never negative)", 2500, 10000, "EUR", GatewayPayment("EUR", 10000, 12000),
     (M, f"{M}:left 0.00 EUR at gateway, 25.00 EUR asked")),
    ("unknown at the gateway", 2500, 10000, "EUR", None, (M, f"{M}:payment not found at gateway")),
    ("JPY has no minor digits", 1200, 5000, "JPY", GatewayPayment("JPY", 4000, 0),
     (M, f"{M}:captured 4000 JPY at gateway, 5000 JPY claimed")),
    ("KWD has three", 1500, 5000, "KWD", GatewayPayment("KWD", 5000, 4000),
     (M, f"{M}:left 1.000 KWD at gateway, 1.500 KWD asked")),
    ("one minor unit short", 2500, 10000, "EUR", GatewayPayment("EUR", 10000, 7501),
     (M, f"{M}:left 24.99 EUR at gateway, 25.00 EUR asked")),
]


@pytest.mark.parametrize(("what", "amount", "captured", "currency", "seen", "codes"), SCENARIOS,
                         ids=[row[0] for row in SCENARIOS])
def test_the_gateways_payment_against_the_request(what, amount, captured, currency, seen, codes):
    region = {"JPY": "JP", "KWD": "KW"}.get(currency, "DE")
    accepted = refund(amount, captured=captured, currency=currency, region=region)
    assert payment_mismatch(accepted, seen) == codes
    check = check_payment(accepted, seen)
    assert (check.mismatch, check.approves, check.released) == (codes, not codes, False)


CAPTURED_LESS = f"{M}:captured 90.00 EUR at gateway, 100.00 EUR claimed"
LEFT_LESS = f"{M}:left 20.00 EUR at gateway, 25.00 EUR asked"

RELEASES = [
    # (what, the gateway's payment now, codes the person released, approves, released)
    ("the same disagreement a person released", GatewayPayment("EUR", 9000, 0), {M, CAPTURED_LESS}, True, True),
    ("it agrees now", GatewayPayment("EUR", 10000, 0), {M, CAPTURED_LESS}, True, False),
    ("something new since the release", GatewayPayment("EUR", 9000, 7000), {M, CAPTURED_LESS}, False, False),
    ("the same kind, other values", GatewayPayment("EUR", 8000, 0), {M, CAPTURED_LESS}, False, False),
    ("released nothing", GatewayPayment("EUR", 9000, 0), set(), False, False),
    ("the payment is gone", None, {M, CAPTURED_LESS}, False, False),
]


@pytest.mark.parametrize(("what", "seen", "acknowledged", "approves", "released"), RELEASES,
                         ids=[row[0] for row in RELEASES])
def test_a_release_covers_only_what_the_person_saw(what, seen, acknowledged, approves, released):
    check = check_payment(refund(2500, captured=10000), seen, frozenset(acknowledged))
    assert (check.approves, check.released) == (approves, released)


def test_mismatch_codes_are_picked_from_a_holds_codes_and_left_out_of_metric_labels():
    codes = ["risk-velocity", M, CAPTURED_LESS, LEFT_LESS, "hold-expired", "payment-mismatch-released"]
    assert mismatch_codes(codes) == {M, CAPTURED_LESS, LEFT_LESS}
    assert counted_codes(codes) == ["risk-velocity", M, "hold-expired", "payment-mismatch-released"]


@pytest.mark.parametrize(("attempts", "seconds"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (50, 60.0)])
def test_an_unanswering_gateway_is_asked_again_with_backoff(attempts, seconds):
    assert recheck_delay(attempts, base_seconds=1.0, cap_seconds=60.0) == seconds
