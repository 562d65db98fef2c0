"""Payout and reconcile decisions: retry schedule, routing, ETA, FX, report parsing, matching."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gatewaysim.gateway import SettlementLine
from gatewaysim.reports import render
from services.payout import domain as payout
from services.reconcile import domain as reconcile
from services.reconcile.settlement_files import minor_units, parse


def test_backoff_grows_exponentially_within_jitter_bounds_and_caps():
    policy = payout.RetryPolicy(base_seconds=1.0, cap_seconds=30.0, max_attempts=5)
    assert [policy.delay(n, 0.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert [policy.delay(n, 0.999) for n in (1, 2, 3)] == pytest.approx([0.9995, 1.999, 3.998])
    assert policy.delay(20, 0.999) <= 30.0
    assert not policy.exhausted(4) and policy.exhausted(5)


def test_only_a_dead_card_falls_back_and_only_where_policy_allows():
    assert payout.reroute("card", "expired_or_canceled_card", "bank_transfer") == "bank_transfer"
    assert payout.reroute("card", "declined", "bank_transfer") is None
    assert payout.reroute("card", "expired_or_canceled_card", None) is None


def test_eta_skips_weekends_and_the_regions_public_holidays():
    # Wed 23 Dec 2026: 5 business days for a card in DE skip the 25th/26th and the weekend.
    assert payout.funds_eta(datetime(2026, 12, 23, 9, tzinfo=UTC), "card", "DE").date().isoformat() == "2026-12-31"
    # US: 4 July 2025 is a Friday holiday; one business day from Thursday 3 July lands on Monday 7 July.
    assert payout.funds_eta(datetime(2025, 7, 3, 9, tzinfo=UTC), "paypal", "US").date().isoformat() == "2025-07-07"
    # A wallet is instant on a business day, and the next business day on a Saturday.
    assert payout.funds_eta(datetime(2026, 11, 28, 9, tzinfo=UTC), "wallet", "FR").date().isoformat() == "2026-11-30"


def test_fx_converts_minor_units_with_bankers_rounding():
    assert payout.convert(2500, 2, 2, Decimal("1.0812")) == 2703  # 27.03 USD
    assert payout.convert(1000, 0, 2, Decimal("0.006702")) == 670  # 1000 JPY -> 6.70 USD
    assert payout.convert(1, 3, 2, Decimal("3.2541")) == 0  # 0.001 KWD -> 0.0033 USD -> 0.00


def test_report_amounts_are_exact_minor_units_never_rounded():
    assert minor_units("-25.00", "EUR", "gross") == -2500
    assert minor_units("1200", "JPY", "gross") == 1200
    assert minor_units("1.234", "KWD", "gross") == 1234
    for bad in ("25.001", "1e3", "25,00", ""):
        with pytest.raises(ValueError):
            minor_units(bad, "EUR", "gross")


@pytest.mark.parametrize("fmt", ["stripe", "adyen"])
def test_the_simulators_files_parse_back_to_the_same_lines(fmt):
    lines = [SettlementLine(1, "simre_a", 2500, "EUR", 0), SettlementLine(2, "simre_b", 1200, "JPY", 0),
             SettlementLine(3, "simre_a", 2500, "EUR", 0, kind="refund_reversal")]
    parsed = parse(fmt, render(fmt, lines))
    assert parsed.errors == [] and parsed.ignored == []
    assert [(l.line_no, l.gateway_ref, l.kind, l.amount_value, l.currency) for l in parsed.lines] == [
        (2, "simre_a", "refund", 2500, "EUR"), (3, "simre_b", "refund", 1200, "JPY"),
        (4, "simre_a", "refund_reversal", 2500, "EUR")]
    assert len({l.txn_id for l in parsed.lines}) == 3


def test_a_header_without_required_columns_is_one_clear_error():
    parsed = parse("stripe", "id,amount\n1,2\n")
    assert [(e.line_no, e.message) for e in parsed.errors] == [(1, "missing columns in the header")]
    assert "source_id" in parsed.errors[0].field


@pytest.mark.parametrize(("kind", "state", "category", "settled", "currency", "expected"), [
    ("refund", "awaiting", None, 2500, "EUR", "matched"),
    ("refund", "awaiting", None, 2499, "EUR", "amount_mismatch"),
    ("refund", "awaiting", None, 2500, "USD", "currency_mismatch"),
    ("refund", "discrepancy", "missing_in_report", 2500, "EUR", "matched"),  # a late line re-matches
    ("refund", "matched", "matched", 2500, "EUR", "duplicate"),
    ("refund", "discrepancy", "amount_mismatch", 2500, "EUR", "duplicate"),
    ("refund_reversal", "matched", "matched", 2500, "EUR", "reversed"),
])
def test_line_classification(kind, state, category, settled, currency, expected):
    assert reconcile.classify_line(kind, state, category, 2500, "EUR", settled, currency).category == expected


def test_a_refund_fee_above_the_allowed_share_is_a_fee_mismatch():
    assert reconcile.classify_line("refund", "awaiting", None, 2500, "EUR", 2500, "EUR", 75, 300).state == "matched"
    assert reconcile.classify_line("refund", "awaiting", None, 2500, "EUR", 2500, "EUR", 76, 300).category \
        == "fee_mismatch"


def test_ledger_imbalance_names_unaccounted_money():
    assert reconcile.Ledger("EUR", paid=10_000, matched_settled=6_000, open_discrepancies=2_500, resolved=1_000,
                            awaiting=500).imbalance == 0
    assert reconcile.Ledger("EUR", 10_000, 6_001, 2_500, 1_000, 500).imbalance == -1


def test_adyen_lines_with_bad_values_are_named_by_line_and_column():
    header = render("adyen", [])
    good = render("adyen", [SettlementLine(9, "simre_c", 2500, "EUR", 0)]).splitlines()[1]
    bad_amount = good.replace(",25.00,", ",25.5.0,", 1)
    bad_currency = good.replace(",EUR,", ",EUX,", 1)
    settled = good.replace(",Refunded,", ",Settled,")
    parsed = parse("adyen", header + "\n".join([good, bad_amount, bad_currency, settled]) + "\n")
    assert [(l.line_no, l.gateway_ref) for l in parsed.lines] == [(2, "simre_c")]
    assert [(e.line_no, e.field) for e in parsed.errors] == [(3, "Gross Debit (GC)"), (4, "Gross Currency")]
    assert parsed.ignored == [(5, "Type Settled is not a refund")]


def test_simulator_fault_shares_are_fixed_per_payment():
    from gatewaysim.gateway import SimFaults, _first_outcome, _has

    everyone = SimFaults(decline_percent=0, async_percent=100)
    nobody = SimFaults(decline_percent=0)
    assert _first_outcome("pay-1", "card", everyone) == ("pending", None)
    assert _first_outcome("pay-1", "card", nobody) == ("succeeded", None)
    assert _first_outcome("pay-1-sim-expired", "card", nobody) == ("failed", "expired_or_canceled_card")
    assert _first_outcome("pay-1-sim-expired", "bank_transfer", nobody) == ("succeeded", None)
    share = sum(_has(f"pay-{n}", "timeout", 20) for n in range(2000)) / 2000
    assert 0.15 < share < 0.25


def test_a_refund_settles_in_the_merchants_currency_only_when_it_is_another_one():
    settles_in = {"shop-us": "USD"}
    assert payout.settlement_currency(settles_in, "shop-us", "EUR") == "USD"
    assert payout.settlement_currency(settles_in, "shop-us", "USD") is None
    assert payout.settlement_currency(settles_in, "shop-eu", "EUR") is None
    quote = payout.FxQuote("EUR", "USD", Decimal("1.0812"), "seed-snapshot", datetime(2026, 11, 24).date())
    assert quote.provenance == "seed-snapshot@2026-11-24"


def test_a_batch_settles_in_rounds_of_one_line_per_reference_each_reference_in_order():
    a, b, c = (reconcile.GatewayRef("sim", ref) for ref in ("re_a", "re_b", "re_c"))
    assert reconcile.rounds([a, b, a, c, a, b]) == [[0, 1, 3], [2, 5], [4]]
    assert reconcile.rounds([a, b, c]) == [[0, 1, 2]]
    assert reconcile.rounds([]) == []
    # The same reference on two gateways is two refunds.
    assert reconcile.rounds([a, reconcile.GatewayRef("stripe", "re_a")]) == [[0, 1]]


LINE = {"id": 7, "gateway": "sim", "gateway_ref": "re_a", "txn_id": "txn_7", "amount_value": 2500, "currency": "EUR"}
PAID = {"refund_id": "rf_a", "expected_value": 2500, "expected_currency": "EUR"}


def test_a_matched_line_closes_the_refunds_missing_alarms_and_opens_nothing():
    s = reconcile.settlement(LINE, PAID, reconcile.Match("matched", "matched"))
    assert s.closes == (("missing_internally", "paid refund rf_a arrived"),
                        ("missing_in_report", "late settlement line txn_7"))
    assert s.opens is None and not s.duplicate and not s.reverses
    assert (s.line_id, s.ref, s.expected, s.settled) == (7, ("sim", "re_a"), (2500, "EUR"), (2500, "EUR"))


def test_a_reversal_supersedes_every_discrepancy_about_the_refund_and_opens_its_own():
    s = reconcile.settlement(LINE, PAID, reconcile.Match("discrepancy", "reversed"))
    assert s.closes[0] == ("missing_internally", "paid refund rf_a arrived")
    assert {category for category, _ in s.closes[1:]} == reconcile.PAYOUT_CATEGORIES
    assert s.opens == "reversed" and s.reverses


def test_a_duplicate_line_opens_its_own_discrepancy_and_leaves_the_payout_as_it_was():
    s = reconcile.settlement(LINE, PAID, reconcile.Match("discrepancy", "duplicate"))
    assert s.closes == (("missing_internally", "paid refund rf_a arrived"),)
    assert s.opens == "duplicate" and s.duplicate
    assert reconcile.payout_after(("matched", "matched"), s.result) == ("matched", "matched")
    mismatch = reconcile.Match("discrepancy", "amount_mismatch")
    assert reconcile.payout_after(("awaiting", None), mismatch) == ("discrepancy", "amount_mismatch")
    # What the next line of the same refund is classified against: already accounted for, so a duplicate.
    assert reconcile.classify_line("refund", "discrepancy", "amount_mismatch", 2500, "EUR", 2500, "EUR").category \
        == "duplicate"
