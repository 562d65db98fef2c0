"""Reconcile's amount, FX and fee rules, the ledger with FX differences, FX rows in Adyen's report. No I/O."""

import pytest

from services.reconcile.domain import Ledger, classify_line, match, share
from services.reconcile.settlement_files import parse
from tests.integration.settlement_reports import ADYEN_HEADER


def test_a_share_is_rounded_up_to_a_whole_minor_unit():
    assert share(2500, 300) == 75
    assert share(2501, 300) == 76  # 75.03
    assert share(10, 300) == 1  # 0.3
    assert share(10, 0) == 0


@pytest.mark.parametrize(("settled", "expected"), [
    (2703, ("matched", 0)),
    (2711, ("matched", 8)),  # the gateway's spread: within 50 bps (14) of 2703
    (2717, ("matched", 14)),  # the edge of the tolerance
    (2689, ("matched", -14)),  # short of the estimate counts the same way
    (2718, ("amount_mismatch", 0)),
    (2688, ("amount_mismatch", 0)),
])
def test_a_cross_currency_line_within_the_fx_tolerance_matches_with_its_difference(settled, expected):
    result = match(2703, "USD", settled, "USD", fx_tolerance_bps=50)
    assert (result.category, result.fx_difference) == expected
    assert result.reason_codes == ([f"fx_difference:{expected[1]}"] if expected[1] else [])


def test_without_an_fx_tolerance_amounts_match_only_to_the_minor_unit():
    assert match(2703, "USD", 2704, "USD").category == "amount_mismatch"
    assert match(2703, "USD", 2703, "EUR", fx_tolerance_bps=50).category == "currency_mismatch"


def test_fees_within_the_bound_match_and_the_gateways_minimum_fee_is_within_it():
    assert classify_line("refund", "awaiting", None, 10, "USD", 10, "USD", 1, 300).category == "matched"
    assert classify_line("refund", "awaiting", None, 10, "USD", 10, "USD", 2, 300).category == "fee_mismatch"
    assert classify_line("refund", "awaiting", None, 2500, "USD", 2500, "USD", 38, 300).category == "matched"


def test_an_fx_match_with_a_fee_above_the_bound_is_a_fee_mismatch():
    within = classify_line("refund", "awaiting", None, 2703, "USD", 2711, "USD", 40, 300, fx_tolerance_bps=50)
    assert (within.category, within.fx_difference) == ("matched", 8)
    assert classify_line("refund", "awaiting", None, 2703, "USD", 2711, "USD", 83, 300,
                         fx_tolerance_bps=50).category == "fee_mismatch"


def test_the_ledger_counts_fx_matches_at_payouts_amount_and_shows_the_gap_apart():
    # Paid 2703 + 1000; both matched; the gateway settled 2711 for the first.
    entry = Ledger("USD", paid=3703, matched_settled=3703, open_discrepancies=0, resolved=0, awaiting=0,
                   fx_difference=8)
    assert entry.imbalance == 0 and entry.settled_by_gateway == 3711


def test_an_adyen_row_converted_by_adyen_settles_its_net_amount_in_the_net_currency():
    # 50.00 USD refunded from a EUR account: 46.38 EUR debited plus 0.70 EUR commission.
    row = ("Co,Merch,psp-1,m1,visa,2026-11-24 10:00:00,UTC,Refunded,REF1,USD,50.00,,0.9276,EUR,47.08,,0.70,0.00,"
           "0.00,0.00,visa,,3")
    same = ("Co,Merch,psp-2,m1,visa,2026-11-24 10:00:00,UTC,Refunded,REF2,JPY,1200,,1,JPY,1212,,12,0,0,0,visa,,3")
    parsed = parse("adyen", "\n".join([ADYEN_HEADER, row, same]) + "\n")
    assert parsed.errors == []
    assert [(l.gateway_ref, l.amount_value, l.currency, l.fee_value) for l in parsed.lines] == [
        ("REF1", 4638, "EUR", 70), ("REF2", 1200, "JPY", 12)]
