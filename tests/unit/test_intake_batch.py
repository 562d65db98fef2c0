"""Intake's pure batch decision: a batch decided at once gets what its requests would get one by one,
in consumption order."""

from datetime import UTC, datetime

from services.intake.domain import (
    REQUESTED_TYPE, Accepted, Duplicate, PaymentBalance, Rejected, Submission, payments_to_lock,
    reservations, screen, settle,
)
from shared.contract.events import FieldError
from shared.contract.ids import refund_id_for
from tests.integration.helpers import valid_request

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def submit(data: object, *, source: str = "shop-eu", event_type: str = REQUESTED_TYPE,
           errors: tuple[FieldError, ...] = ()) -> Submission:
    request_id = data.get("request_id") if isinstance(data, dict) else None
    return Submission(source, request_id, event_type, data, NOW, errors)


def on_payment(first: dict, amount: int, **changes) -> dict:
    return valid_request(amount=amount, captured=first["payment"]["captured"]["value"],
                         payment={**first["payment"], **changes})


def decided(submissions: list[Submission], stored: dict[str, str | None] | None = None,
            balances: dict | None = None) -> list:
    screened = screen(submissions, stored or {})
    known = balances or {}
    opened = {key: known.get(key) or PaymentBalance(money.currency, money.value, 0)
              for key, money in payments_to_lock(screened).items()}
    return settle(screened, opened)


def test_two_requests_on_one_payment_the_second_sees_the_first_ones_reservation():
    first = valid_request(amount=3000, captured=5000)
    second = on_payment(first, 3000)
    third = on_payment(first, 2000)
    verdicts = decided([submit(first), submit(second), submit(third)])
    assert isinstance(verdicts[0], Accepted) and isinstance(verdicts[2], Accepted)
    [error] = verdicts[1].errors
    assert (error.code, error.message) == ("exceeds_refundable", "only 20.00 EUR of this payment is still refundable")
    assert reservations(verdicts) == {("sim", first["payment"]["id"]): 5000}


def test_a_payment_first_seen_in_the_batch_is_opened_with_its_first_requests_captured_amount():
    first = valid_request(amount=1000, captured=5000)
    other = on_payment(first, 1000, captured={"value": 4000, "currency": "EUR"})
    submissions = [submit(first), submit(other)]
    assert payments_to_lock(screen(submissions, {}))[("sim", first["payment"]["id"])].value == 5000
    verdicts = decided(submissions)
    assert isinstance(verdicts[0], Accepted)
    assert [e.code for e in verdicts[1].errors] == ["captured_mismatch"]


def test_the_known_balance_counts_what_was_accepted_before_the_batch():
    first = valid_request(amount=2000, captured=5000)
    key = ("sim", first["payment"]["id"])
    [verdict] = decided([submit(first)], balances={key: PaymentBalance("EUR", 5000, 4000)})
    assert isinstance(verdict, Rejected) and [e.code for e in verdict.errors] == ["exceeds_refundable"]


def test_a_key_twice_in_the_batch_gets_the_first_ones_outcome_and_a_reused_key_is_told_apart():
    first = valid_request()
    again = dict(first)
    reused = {**first, "order_id": "another-order"}
    verdicts = decided([submit(first), submit(again), submit(reused)])
    assert isinstance(verdicts[0], Accepted)
    assert verdicts[1:] == [Duplicate(0, reused_key=False), Duplicate(0, reused_key=True)]
    # Only the first reserves anything.
    assert reservations(verdicts) == {("sim", first["payment"]["id"]): first["amount"]["value"]}


def test_a_key_decided_before_the_batch_is_a_duplicate_of_the_stored_outcome():
    data = valid_request()
    refund_id = refund_id_for("shop-eu", data["request_id"])
    same, other = submit(data), submit({**data, "order_id": "x"})
    assert screen([same, other], {refund_id: same.body_hash}) == [Duplicate(None), Duplicate(None, True)]
    # Tickets from before body hashes: taken as the same body.
    assert screen([other], {refund_id: None}) == [Duplicate(None, False)]


def test_the_first_of_a_key_in_the_batch_counts_even_when_it_was_rejected():
    broken = {**valid_request(), "region": "Germany"}
    fixed = {**broken, "region": "DE"}
    verdicts = decided([submit(broken), submit(fixed)])
    assert isinstance(verdicts[0], Rejected) and verdicts[0].request is None
    assert verdicts[1] == Duplicate(0, reused_key=True)


def test_invalid_requests_lock_no_payment_and_the_callers_errors_come_first():
    valid, invalid = valid_request(), {**valid_request(), "amount": {"value": 0, "currency": "EUR"}}
    mismatch = FieldError(field="request_id", code="invalid", message="differs from the Idempotency-Key")
    screened = screen([submit(invalid), submit(valid, errors=(mismatch,))], {})
    assert payments_to_lock(screened) == {}
    verdicts = settle(screened, {})
    assert [e.code for e in verdicts[0].errors] == ["not_positive"]
    assert verdicts[1] == Rejected([mismatch], verdicts[1].request) and verdicts[1].request is not None
    assert reservations(verdicts) == {}


def test_requests_without_a_readable_key_are_each_decided_and_never_deduped():
    nameless = {**valid_request(), "request_id": ""}
    verdicts = decided([submit(nameless), submit(dict(nameless)), submit(None)])
    assert all(isinstance(v, Rejected) for v in verdicts)
    assert [e.code for e in verdicts[2].errors] == ["missing"]


def test_another_event_type_on_the_request_topic_is_rejected_naming_type():
    [verdict] = decided([submit(valid_request(), event_type="refund.denied.v1")])
    assert isinstance(verdict, Rejected) and [e.field for e in verdict.errors] == ["type"]
