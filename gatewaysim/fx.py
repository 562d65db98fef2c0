"""What a refund moves a merchant's balance by when the account settles in another currency.

The gateway converts at its own rate (`SIM_FX_RATES`, e.g. {"EUR/USD": "1.0812"}: one
EUR is 1.0812 USD; the inverse pair is derived when only one is given) worsened
for the merchant by `spread_bps`, and rounds half-even to the settlement
currency's minor unit.
"""

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal

from shared.contract.money import currency_exponent


def rate(rates: Mapping[str, Decimal], base: str, quote: str) -> Decimal | None:
    if f"{base}/{quote}" in rates:
        return rates[f"{base}/{quote}"]
    inverse = rates.get(f"{quote}/{base}")
    return 1 / inverse if inverse else None


def settle(value: int, currency: str, settlement_currency: str | None, rates: Mapping[str, Decimal],
           spread_bps: int) -> tuple[int, str]:
    """(value, currency) in the settlement currency; unchanged without one or without a rate for the pair."""
    if not settlement_currency or settlement_currency == currency:
        return value, currency
    found = rate(rates, currency, settlement_currency)
    if found is None:
        return value, currency
    charged = found * (1 + Decimal(spread_bps) / 10_000)  # a refund costs the merchant more, never less
    major = Decimal(value).scaleb(-currency_exponent(currency)) * charged
    return (int(major.scaleb(currency_exponent(settlement_currency)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)),
            settlement_currency)
