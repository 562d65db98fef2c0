"""A refund-window rule that cannot be checked (no payment.captured_at) sends the refund to review.

Not approve: the window may have passed. Not deny: it may not have. The reason code says which
rule could not be checked and why: `<rule id>:captured_at_unknown`.
"""

import pytest

from services.approval.domain import CustomerHistory, apply_rules, decide
from services.approval.policy import Policy
from shared.runtime.roles import Role
from tests.unit.test_approval_policy import POLICY, refund as accepted_refund

CARD_UNKNOWN = "refund-window-card:captured_at_unknown"
WALLET_UNKNOWN = "refund-window-wallet:captured_at_unknown"


def refund(value=2500, captured_days_ago=None, **changes):
    """An accepted refund whose payment's capture time is unknown unless given."""
    return accepted_refund(value, captured_days_ago=captured_days_ago, **changes)


SCENARIOS = [
    # (what, refund, action, exactly these reason codes, approvals)
    ("card, no capture date", refund(2500), "review", {"auto-approve-standard", CARD_UNKNOWN}, 1),
    ("wallet, no capture date: reviewed, not denied", refund(2500, channel="wallet"), "review",
     {"auto-approve-standard", WALLET_UNKNOWN}, 1),
    ("alipay, no capture date", refund(2500, channel="alipay", currency="CNY", region="CN"), "review",
     {"auto-approve-standard", WALLET_UNKNOWN}, 1),
    ("large card refund, no capture date: four eyes still apply", refund(600000), "review",
     {"review-above-auto-limit", "four-eyes-large", CARD_UNKNOWN}, 2),
    ("bank transfer has no refund window", refund(2500, channel="bank_transfer"), "approve",
     {"auto-approve-standard"}, 0),
    ("card with a capture date inside the window", refund(2500, captured_days_ago=30), "approve",
     {"auto-approve-standard"}, 0),
    ("card with a capture date past the window", refund(2500, captured_days_ago=200), "review",
     {"auto-approve-standard", "refund-window-card"}, 1),
    ("wallet with a capture date past the window", refund(2500, channel="wallet", captured_days_ago=400), "deny",
     {"auto-approve-standard", "refund-window-wallet"}, 0),
]


@pytest.mark.parametrize(("what", "accepted", "action", "codes", "approvals"), SCENARIOS,
                         ids=[row[0] for row in SCENARIOS])
def test_an_unknown_capture_date_never_passes_a_refund_window(what, accepted, action, codes, approvals):
    verdict = decide(POLICY, accepted, CustomerHistory(), dispute_open=False)
    assert (verdict.action, set(verdict.rule_ids), verdict.approvals) == (action, codes, approvals)


def test_risk_still_comes_first_without_a_capture_date():
    verdict = decide(POLICY, refund(2500, reason="fraudulent"), CustomerHistory(), dispute_open=False)
    assert verdict.action == "hold" and verdict.rule_ids == ("risk-reason-fraudulent",)


WINDOWED = Policy.model_validate({
    "version": "t-1", "default_action": "approve",
    "review": {"sla": "1h", "expire_after": "2h"}, "hold": {"sla": "1h", "expire_after": "2h"},
    "rules": [
        {"id": "approve-old-wallet", "when": {"channel": ["wallet"], "days_since_capture_over": 30},
         "action": "approve"},
        {"id": "deny-old-card", "when": {"channel": ["card"], "days_since_capture_over": 90}, "action": "deny",
         "approvals": 2, "roles": ["finance_lead"]},
    ],
})


@pytest.mark.parametrize(("channel", "codes", "approvals", "roles"), [
    ("wallet", ("approve-old-wallet:captured_at_unknown",), 1, tuple(Role)),  # an approve rule does not approve
    ("card", ("deny-old-card:captured_at_unknown",), 2, (Role.FINANCE_LEAD,)),  # the rule's reviewers decide
])
def test_whatever_the_rules_action_an_unchecked_window_is_a_review_by_its_roles(channel, codes, approvals, roles):
    verdict = apply_rules(WINDOWED, refund(2500, channel=channel))
    assert (verdict.action, verdict.rule_ids, verdict.approvals, verdict.roles) == ("review", codes, approvals, roles)


def test_a_window_rule_whose_other_conditions_fail_does_not_fire_without_a_capture_date():
    verdict = apply_rules(WINDOWED, refund(2500, channel="paypal"))
    assert (verdict.action, verdict.rule_ids) == ("approve", ("default",))
