"""Every validation rule of `refund.requested.v1` (SPEC.md), reported all at once."""

import copy

import pytest

from services.intake.domain import PaymentBalance, balance_errors, readable_ids, validate_request
from shared.contract.events import RefundRequested

VALID = {
    "request_id": "req-1",
    "order_id": "ord-1",
    "payment": {"id": "pi_1", "gateway": "sim", "channel": "card", "captured": {"value": 5000, "currency": "EUR"}},
    "amount": {"value": 1500, "currency": "EUR"},
    "customer": {"id": "cus-1", "email": "ana@example.com", "phone": "+4915112345678", "locale": "de-DE"},
    "region": "DE",
    "reason": "damaged",
    "note": "box crushed",
    "requested_at": "2026-11-20T10:00:00+01:00",
    "metadata": {"channel_ref": "x"},
}
TYPE = "refund.requested.v1"


def with_change(path: str, value=..., data=None):
    data = copy.deepcopy(data or VALID)
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    if value is ...:
        del node[leaf]
    else:
        node[leaf] = value
    return data


def codes(result) -> set[tuple[str, str]]:
    assert isinstance(result, list), f"expected errors, got {result!r}"
    return {(e.field, e.code) for e in result}


def test_a_valid_request_passes():
    result = validate_request(TYPE, VALID)
    assert isinstance(result, RefundRequested)
    assert result.amount.value == 1500
    assert result.customer.locale == "de-DE"


def test_locale_defaults_to_en():
    result = validate_request(TYPE, with_change("customer.locale"))
    assert result.customer.locale == "en"


@pytest.mark.parametrize("path", [
    "request_id", "order_id", "payment", "payment.id", "payment.gateway", "payment.channel",
    "payment.captured", "amount", "customer", "customer.id", "region", "reason", "requested_at",
])
def test_each_required_field_is_reported_missing(path):
    assert (path, "missing") in codes(validate_request(TYPE, with_change(path)))


@pytest.mark.parametrize("path", ["request_id", "order_id", "payment.id", "customer.id"])
def test_ids_are_at_most_128_chars_and_not_empty(path):
    assert (path, "too_long") in codes(validate_request(TYPE, with_change(path, "x" * 129)))
    assert (path, "missing") in codes(validate_request(TYPE, with_change(path, "")))
    assert isinstance(validate_request(TYPE, with_change(path, "x" * 128)), RefundRequested)


def test_note_is_at_most_1000_chars():
    assert ("note", "too_long") in codes(validate_request(TYPE, with_change("note", "n" * 1001)))
    assert isinstance(validate_request(TYPE, with_change("note", "n" * 1000)), RefundRequested)


@pytest.mark.parametrize(("path", "value"), [
    ("payment.channel", "cash"),
    ("reason", "changed_mind"),
    ("region", "XX"),
    ("region", "de"),
    ("region", "DEU"),
    ("requested_at", "yesterday"),
    ("requested_at", "2026-11-20T10:00:00"),  # no offset: not RFC 3339
    ("requested_at", 1764000000),             # a number is not an RFC 3339 timestamp
    ("customer.email", "not-an-email"),
    ("customer.phone", "015112345678"),       # not E.164
    ("customer.locale", "english please"),
])
def test_invalid_values_are_reported(path, value):
    assert (path, "invalid") in codes(validate_request(TYPE, with_change(path, value)))


@pytest.mark.parametrize("value", [15.0, 15.5, "1500", True, None])
def test_amount_must_be_integer_minor_units(value):
    assert ("amount.value", "invalid") in codes(validate_request(TYPE, with_change("amount.value", value)))


def test_zero_and_negative_amounts_are_not_positive():
    assert ("amount.value", "not_positive") in codes(validate_request(TYPE, with_change("amount.value", 0)))
    assert ("amount.value", "not_positive") in codes(validate_request(TYPE, with_change("amount.value", -100)))


def test_unknown_currency_is_invalid_currency():
    assert ("amount.currency", "invalid_currency") in codes(
        validate_request(TYPE, with_change("amount.currency", "EUX")))


def test_currency_must_match_the_captured_payment():
    assert ("amount.currency", "currency_mismatch") in codes(
        validate_request(TYPE, with_change("amount.currency", "USD")))


def test_amount_above_captured_exceeds_refundable():
    assert ("amount.value", "exceeds_refundable") in codes(
        validate_request(TYPE, with_change("amount.value", 5001)))


def test_metadata_is_at_most_20_string_pairs():
    too_many = {f"k{i}": "v" for i in range(21)}
    assert ("metadata", "too_long") in codes(validate_request(TYPE, with_change("metadata", too_many)))
    assert ("metadata.k", "invalid") in codes(validate_request(TYPE, with_change("metadata", {"k": 1})))


def test_every_problem_is_reported_at_once():
    data = with_change("order_id")
    data = with_change("region", "ZZ", data)
    data = with_change("amount.value", 1.5, data)
    data = with_change("reason", "bored", data)
    found = codes(validate_request(TYPE, data))
    assert {("order_id", "missing"), ("region", "invalid"), ("amount.value", "invalid"),
            ("reason", "invalid")} <= found


def test_amount_rules_still_reported_alongside_other_errors():
    data = with_change("order_id")
    data = with_change("amount.currency", "USD", data)
    assert {("order_id", "missing"), ("amount.currency", "currency_mismatch")} <= codes(validate_request(TYPE, data))


def test_wrong_event_type_and_non_object_data():
    assert ("type", "invalid") in codes(validate_request("refund.requested.v2", VALID))
    assert ("data", "invalid") in codes(validate_request(TYPE, "a string"))
    assert ("data", "missing") in codes(validate_request(TYPE, None))


def test_balance_allows_partials_up_to_the_captured_amount():
    request = validate_request(TYPE, VALID)
    assert balance_errors(PaymentBalance("EUR", 5000, 3500), request) == []
    [error] = balance_errors(PaymentBalance("EUR", 5000, 3501), request)
    assert (error.field, error.code) == ("amount.value", "exceeds_refundable")
    assert "14.99 EUR" in error.message  # the remaining balance is named


def test_balance_refuses_a_captured_amount_that_disagrees_with_the_first_request():
    request = validate_request(TYPE, VALID)
    [error] = balance_errors(PaymentBalance("EUR", 9000, 0), request)
    assert (error.field, error.code) == ("payment.captured", "captured_mismatch")


def test_readable_ids_from_broken_messages():
    assert readable_ids({"source": "shop", "data": {"request_id": "r1"}}) == ("shop", "r1")
    assert readable_ids({"source": 5, "data": {"request_id": "x" * 200}}) == (None, None)
    assert readable_ids(["not", "a", "dict"]) == (None, None)
