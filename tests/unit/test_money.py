import pytest
from pydantic import ValidationError

from shared.contract.money import Money, currency_exponent


@pytest.mark.parametrize(("currency", "exponent"), [("JPY", 0), ("USD", 2), ("EUR", 2), ("CNY", 2), ("KWD", 3)])
def test_currency_exponents_come_from_iso_4217(currency, exponent):
    assert currency_exponent(currency) == exponent


@pytest.mark.parametrize(("money", "text"), [
    (Money(value=1200, currency="JPY"), "1200 JPY"),
    (Money(value=1050, currency="EUR"), "10.50 EUR"),
    (Money(value=5, currency="USD"), "0.05 USD"),
    (Money(value=1001, currency="KWD"), "1.001 KWD"),
    (Money(value=0, currency="USD"), "0.00 USD"),
])
def test_format_uses_the_currency_exponent(money, text):
    assert money.format() == text


@pytest.mark.parametrize(("value", "code"), [
    (10.0, "int_type"),       # a float, even a whole one, is never rounded
    (10.5, "int_type"),
    ("1000", "int_type"),     # a numeric string is never coerced
    (True, "int_type"),       # a bool is not an amount
    (None, "int_type"),
    (-1, "not_positive"),
    (10**16, "invalid"),
])
def test_value_must_be_non_negative_integer_minor_units(value, code):
    with pytest.raises(ValidationError) as error:
        Money.model_validate({"value": value, "currency": "USD"})
    assert [e["type"] for e in error.value.errors()] == [code]


@pytest.mark.parametrize("currency", ["usd", "XXZ", "US", "", "XAU", 840])
def test_currency_must_be_an_iso_4217_currency_with_minor_units(currency):
    with pytest.raises(ValidationError):
        Money.model_validate({"value": 1, "currency": currency})


def test_unknown_money_fields_are_rejected():
    with pytest.raises(ValidationError):
        Money.model_validate({"value": 1, "currency": "USD", "exponent": 2})
