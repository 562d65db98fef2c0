"""Intake's pure rules for a payment's captured amount and for who may mark a drill."""

from services.intake.domain import DRILL_SOURCE, PaymentBalance, balance_errors, is_drill
from shared.contract.events import RefundRequested
from tests.integration.helpers import valid_request


def test_another_captured_amount_for_a_known_payment_is_captured_mismatch_naming_both():
    request = RefundRequested.model_validate(valid_request(amount=1000, captured=9000))
    [error] = balance_errors(PaymentBalance("EUR", 10_000, 0), request)
    assert (error.field, error.code) == ("payment.captured", "captured_mismatch")
    assert error.message == "this payment was first seen with captured 100.00 EUR; this request says 90.00 EUR"
    [other_currency] = balance_errors(PaymentBalance("USD", 9000, 0), request)
    assert other_currency.code == "captured_mismatch" and "90.00 USD" in other_currency.message


def test_only_the_drill_scheduler_or_an_allowed_source_marks_a_drill():
    marked = RefundRequested.model_validate(valid_request(metadata={"drill": "true"}))
    unmarked = RefundRequested.model_validate(valid_request(metadata={"drill": "no"}))
    allowed = frozenset({DRILL_SOURCE, "shop-rehearsal"})
    assert is_drill(marked, DRILL_SOURCE, allowed) and is_drill(marked, "shop-rehearsal", allowed)
    assert not is_drill(marked, "shop-eu", allowed)
    assert not is_drill(unmarked, DRILL_SOURCE, allowed)
