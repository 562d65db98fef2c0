"""Parked expiry (`on_expiry: park`), reopening by a senior reviewer, and the queue's filters."""

from pathlib import Path

import pytest
from fastapi import HTTPException
from starlette.requests import Request

from services.approval import store
from services.approval.api import QueueParams
from services.approval.domain import (
    OpenReview, ReviewRefused, allowed_roles, can_reopen_roles, check_decision, check_reopen,
    waiting_for_second_approver,
)
from services.approval.policy import PolicyError, Waiting, load_policy

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "policy" / "refund-policy.yaml"
GOOD = SHIPPED.read_text()


def write(tmp_path, text):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_shipped_policy_parks_expired_reviews_and_holds():
    policy = load_policy(SHIPPED)
    assert (policy.review.on_expiry, policy.hold.on_expiry) == ("park", "park")


def test_on_expiry_defaults_to_deny(tmp_path):
    policy = load_policy(write(tmp_path, GOOD.replace("  on_expiry: park\n", "", 1)))
    assert (policy.review.on_expiry, policy.hold.on_expiry) == ("deny", "park")
    assert Waiting(sla="1h", expire_after="2h").on_expiry == "deny"


@pytest.mark.parametrize("value", ["deny", "approve", "park"])
def test_every_expiry_action_is_accepted(tmp_path, value):
    policy = load_policy(write(tmp_path, GOOD.replace("  on_expiry: park\n", f"  on_expiry: {value}\n", 1)))
    assert policy.review.on_expiry == value


def test_unknown_expiry_action_names_line_and_field(tmp_path):
    path = write(tmp_path, GOOD.replace("  on_expiry: park\n", "  on_expiry: reopen\n", 1))
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "on_expiry: reopen" in text)
    with pytest.raises(PolicyError, match=rf"policy.yaml:{line}: review.on_expiry: Input should be 'deny', "
                                          rf"'approve' or 'park'"):
        load_policy(path)


EXPIRED = OpenReview("review", "expired", 2, ("senior_reviewer", "finance_lead"), ("alice",))
OPEN = OpenReview("review", "open", 1, ("reviewer",), ())


def test_a_senior_reviewer_may_reopen_an_expired_review():
    check_reopen(EXPIRED, frozenset({"senior_reviewer"}))
    check_reopen(OpenReview("hold", "expired", 1, ("finance_lead",), ()), frozenset({"senior_reviewer"}))


@pytest.mark.parametrize(("review", "roles", "status", "code"), [
    (EXPIRED, {"reviewer"}, 403, "role_not_permitted"),
    (EXPIRED, {"finance_lead"}, 403, "role_not_permitted"),
    (OPEN, {"senior_reviewer"}, 409, "not_expired"),
    (OpenReview("review", "denied", 1, ("reviewer",), ()), {"senior_reviewer"}, 409, "not_expired"),
    (OPEN, {"reviewer"}, 403, "role_not_permitted"),  # the role is checked before the state
])
def test_refused_reopens(review, roles, status, code):
    with pytest.raises(ReviewRefused) as refused:
        check_reopen(review, frozenset(roles))
    assert (refused.value.status, refused.value.code) == (status, code)


def test_an_expired_review_is_not_decided_until_reopened():
    with pytest.raises(ReviewRefused) as refused:
        check_decision(EXPIRED, "approve", "bob", frozenset({"finance_lead"}))
    assert (refused.value.status, refused.value.code) == (409, "expired")
    assert "reopen" in str(refused.value)


def test_queue_fields_follow_the_state():
    assert waiting_for_second_approver(EXPIRED)
    assert not waiting_for_second_approver(OPEN)
    assert allowed_roles(EXPIRED) == () and can_reopen_roles(EXPIRED) == ("senior_reviewer",)
    assert allowed_roles(OPEN) == ("reviewer",) and can_reopen_roles(OPEN) == ()


def params(query: str) -> QueueParams:
    return QueueParams.of(Request({"type": "http", "query_string": query.encode(), "headers": []}))


def test_queue_filters_parse():
    got = params("kind=hold&channel=bank_transfer&region=FR&rule=risk-velocity&currency=EUR"
                 "&min_amount=100&max_amount=900&state=expired")
    assert got.filter() == store.QueueFilter("expired", "hold", "bank_transfer", "FR", "risk-velocity", "EUR",
                                             100, 900)
    assert params("").filter() == store.QueueFilter()


@pytest.mark.parametrize(("query", "names"), [
    ("kind=refund", "kind"), ("state=closed", "state"), ("channel=cash", "channel"), ("region=XX", "region"),
    ("currency=XYZ", "currency"), ("currency=EUR&min_amount=1.5", "min_amount"),
    ("currency=EUR&max_amount=-1", "max_amount"), ("min_amount=100", "min_amount: needs currency"),
    ("currency=EUR&min_amount=500&max_amount=100", "max_amount: 100 is below min_amount 500"),
    ("rule=a%20b", "rule"), ("limit=0", "limit"), ("kind=hold&kind=review", "kind: give it once"),
])
def test_bad_filters_are_422_naming_the_parameter(query, names):
    with pytest.raises(HTTPException) as bad:
        params(query)
    assert bad.value.status_code == 422
    assert bad.value.detail.startswith(names if ":" in names else f"{names}:")


def test_queue_query_has_only_the_given_filters():
    sql, args = store.queue_query(store.QueueFilter("open", rule="four-eyes-large", currency="EUR", min_amount=5),
                                  50)
    assert "r.rule_ids @> ARRAY[$2::text]" in sql and "r.amount_value >= $4" in sql
    assert "channel" not in sql.split("WHERE r.")[-1] and sql.endswith("ORDER BY r.opened_at, r.refund_id LIMIT $5")
    assert args == ["open", "four-eyes-large", "EUR", 5, 50]
