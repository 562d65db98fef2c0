"""The shipped policy, table-driven: each row is a scenario of the SOP and what must happen."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.approval.domain import CustomerHistory, apply_rules, decide, is_cross_currency, scope_of
from services.approval.policy import load_policy
from shared.contract.events import RefundAccepted
from shared.runtime.roles import Role

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy(ROOT / "deploy" / "policy" / "refund-policy.yaml")
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def refund(value=2500, captured=None, currency="EUR", channel="card", region="DE", reason="damaged",
           captured_days_ago: int | None = 10, source="shop-eu") -> RefundAccepted:
    """An accepted refund; `captured_days_ago=None` leaves the payment's capture time unknown."""
    payment = {"id": "pay-1", "gateway": "sim", "channel": channel,
               "captured": {"value": captured or value, "currency": currency}}
    if captured_days_ago is not None:
        payment["captured_at"] = (NOW - timedelta(days=captured_days_ago)).isoformat()
    return RefundAccepted.model_validate({
        "refund_id": "rf_1", "request_id": "req-1", "source": source, "order_id": "ord-1",
        "amount": {"value": value, "currency": currency}, "channel": channel, "region": region,
        "payment": payment, "customer": {"id": "cus-1"}, "reason": reason,
        "requested_at": NOW, "accepted_at": NOW,
    })


SCENARIOS = [
    # (what, refund, action, rule ids that must fire, approvals)
    ("small full card refund", refund(2500), "approve", {"auto-approve-standard"}, 0),
    ("at the auto limit", refund(50000), "approve", {"auto-approve-standard"}, 0),
    ("one cent above the auto limit", refund(50001), "review", {"review-above-auto-limit"}, 1),
    ("large refund needs four eyes", refund(600000), "review", {"four-eyes-large"}, 2),
    ("JPY has no minor digits", refund(75000, currency="JPY", region="JP"), "approve", {"auto-approve-standard"}, 0),
    ("JPY above its limit", refund(75001, currency="JPY", region="JP"), "review", {"review-above-auto-limit"}, 1),
    ("KWD has three digits", refund(150000, currency="KWD", region="KW"), "approve", {"auto-approve-standard"}, 0),
    ("currency without thresholds", refund(100, currency="CHF", region="CH"), "review", {"default"}, 1),
    ("card inside the refund window", refund(2500, captured_days_ago=30), "approve", {"auto-approve-standard"}, 0),
    ("card past the refund window", refund(2500, captured_days_ago=200), "review", {"refund-window-card"}, 1),
    ("wallet past its window is denied", refund(2500, channel="wallet", captured_days_ago=400), "deny",
     {"refund-window-wallet"}, 0),
    ("capture date unknown: the window goes to review", refund(2500, channel="wallet", captured_days_ago=None),
     "review", {"refund-window-wallet:captured_at_unknown"}, 1),
    ("cross-currency partial", refund(2500, captured=5000, currency="USD", region="DE"), "review",
     {"cross-currency-partial"}, 1),
    ("cross-currency full", refund(2500, currency="USD", region="DE"), "approve", {"auto-approve-standard"}, 0),
    ("same-currency partial", refund(2500, captured=5000), "approve", {"auto-approve-standard"}, 0),
    ("bank transfer above 200 EUR", refund(20001, channel="bank_transfer"), "review", {"bank-transfer-review"}, 1),
    ("bank transfer below 200 EUR", refund(20000, channel="bank_transfer"), "approve",
     {"auto-approve-standard"}, 0),
]


@pytest.mark.parametrize(("what", "accepted", "action", "must_fire", "approvals"), SCENARIOS,
                         ids=[row[0] for row in SCENARIOS])
def test_policy_scenarios(what, accepted, action, must_fire, approvals):
    verdict = decide(POLICY, accepted, CustomerHistory(), dispute_open=False)
    assert verdict.action == action
    assert must_fire <= set(verdict.rule_ids)
    assert verdict.approvals == approvals


def test_four_eyes_reviews_are_for_senior_roles_only():
    verdict = apply_rules(POLICY, refund(600000))
    assert set(verdict.roles) == {Role.SENIOR_REVIEWER, Role.FINANCE_LEAD}


RISKS = [
    ("fraudulent reason", refund(2500, reason="fraudulent"), CustomerHistory(), False, {"risk-reason-fraudulent"}),
    ("open dispute", refund(2500), CustomerHistory(), True, {"risk-open-dispute"}),
    ("sixth refund in a day", refund(2500), CustomerHistory(refunds_in_velocity_window=5), False,
     {"risk-velocity"}),
    ("far above the customer's median", refund(20001), CustomerHistory(past_amounts=(1000, 2000, 3000)), False,
     {"risk-amount-unusual-for-customer"}),
    ("two risks at once", refund(2500, reason="fraudulent"), CustomerHistory(refunds_in_velocity_window=9), True,
     {"risk-reason-fraudulent", "risk-open-dispute", "risk-velocity"}),
]


@pytest.mark.parametrize(("what", "accepted", "history", "disputed", "codes"), RISKS, ids=[r[0] for r in RISKS])
def test_risk_rules_hold(what, accepted, history, disputed, codes):
    verdict = decide(POLICY, accepted, history, disputed)
    assert verdict.action == "hold"
    assert set(verdict.rule_ids) == codes
    assert set(verdict.roles) == {Role.SENIOR_REVIEWER, Role.FINANCE_LEAD}


@pytest.mark.parametrize(("history", "held"), [
    (CustomerHistory(refunds_in_velocity_window=4), False),          # fifth refund: still fine
    (CustomerHistory(past_amounts=(1000, 2000)), False),              # too little history to judge
    (CustomerHistory(past_amounts=(2000, 2000, 2000)), False),        # 10x median exactly: not above
])
def test_risk_thresholds_are_not_triggered_early(history, held):
    verdict = decide(POLICY, refund(20000), history, dispute_open=False)
    assert (verdict.action == "hold") is held


def test_scope_and_cross_currency_helpers():
    assert scope_of(refund(5000)) == "full"
    assert scope_of(refund(2500, captured=5000)) == "partial"
    assert is_cross_currency(refund(2500, currency="USD", region="DE"))
    assert not is_cross_currency(refund(2500, currency="EUR", region="FR"))
    assert not is_cross_currency(refund(2500, currency="USD", region="US"))
