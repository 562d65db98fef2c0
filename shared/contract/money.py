"""Money: integer minor units plus an ISO 4217 currency, one type everywhere."""

import functools
from typing import Annotated

from iso4217 import Currency
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

# Larger than any real refund, small enough for a PostgreSQL bigint sum.
MAX_MINOR_UNITS = 10**15


@functools.cache  # every Money validated looks its currency up; the codes that exist are few (a miss raises)
def currency_exponent(code: str) -> int:
    """Digits after the decimal point for an ISO 4217 code (JPY 0, USD 2, KWD 3)."""
    exponent = Currency(code).exponent
    if exponent is None:
        raise ValueError(f"{code} is not a currency money can be refunded in")
    return exponent


def major_units_text(value: int, currency: str) -> str:
    """Minor units as decimal text in the currency's own exponent: 2500 EUR -> '25.00', -1200 JPY -> '-1200'."""
    exponent = currency_exponent(currency)
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(value), 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d}" if exponent else f"{sign}{whole}"


def _known_currency(code: str) -> str:
    try:
        currency_exponent(code)
    except ValueError:
        raise PydanticCustomError(
            "invalid_currency", "{code} is not an ISO 4217 currency", {"code": code}
        ) from None
    return code


def _minor_units(value: int) -> int:
    if value < 0:
        raise PydanticCustomError("not_positive", "money value must not be negative")
    if value > MAX_MINOR_UNITS:
        raise PydanticCustomError("invalid", "money value is out of range")
    return value


class Money(BaseModel):
    """An amount in the currency's minor units: {"value": 1050, "currency": "EUR"}.

    Floats, strings and negative values are errors, never rounded or coerced.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: Annotated[StrictInt, AfterValidator(_minor_units)]
    currency: Annotated[StrictStr, AfterValidator(_known_currency)]

    def format(self) -> str:
        """Human form for logs and the demo, e.g. '10.50 EUR', '1200 JPY'."""
        return f"{major_units_text(self.value, self.currency)} {self.currency}"
