"""Matching a paid refund to its settlement line. Pure: no I/O."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Match:
    state: str  # matched | discrepancy
    category: str  # matched | amount_mismatch | currency_mismatch


def match(paid_value: int, paid_currency: str, settled_value: int, settled_currency: str) -> Match:
    if settled_currency != paid_currency:
        return Match("discrepancy", "currency_mismatch")
    if settled_value != paid_value:
        return Match("discrepancy", "amount_mismatch")
    return Match("matched", "matched")
