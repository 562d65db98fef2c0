"""Stripe refund objects and errors (shapes per Stripe's API reference) as the gateway port's results."""

import pytest
import stripe

from services.payout.stripe_gateway import classify, refund_result


def _refund(status: str, failure_reason: str | None = None) -> dict:
    # The refund object as documented: https://docs.stripe.com/api/refunds/object
    return {"id": "re_1Nispe2eZvKYlo2Cd31jOCgZ", "object": "refund", "amount": 1000, "currency": "usd",
            "payment_intent": "pi_2Nispe2eZvKYlo2C0H5Q5OBz", "status": status, "failure_reason": failure_reason,
            "metadata": {"refund_key": "rf_1"}}


@pytest.mark.parametrize(("status", "reason", "expected"), [
    ("succeeded", None, ("succeeded", None)),
    ("pending", None, ("pending", None)),
    ("requires_action", None, ("pending", None)),
    ("failed", "expired_or_canceled_card", ("failed", "expired_or_canceled_card")),
    ("failed", "lost_or_stolen_card", ("failed", "lost_or_stolen_card")),
    ("canceled", None, ("failed", "canceled")),
])
def test_refund_statuses(status, reason, expected):
    result = refund_result(_refund(status, reason))
    assert (result.status, result.failure_reason) == expected and result.gateway_ref.startswith("re_")


@pytest.mark.parametrize(("error", "retryable", "reason"), [
    (stripe.APIConnectionError("connection reset"), True, "stripe_http_connection"),
    (stripe.RateLimitError("slow down", http_status=429), True, "stripe_http_429"),
    (stripe.APIError("internal", http_status=500), True, "stripe_http_500"),
    (stripe.IdempotencyError("in flight", http_status=409), True, "stripe_http_409"),
    (stripe.InvalidRequestError("already refunded", param="charge", code="charge_already_refunded",
                                http_status=400), False, "stripe_charge_already_refunded"),
    (stripe.AuthenticationError("bad key", http_status=401), False, "stripe_AuthenticationError"),
])
def test_error_classification(error, retryable, reason):
    classified = classify(error)
    assert (classified.retryable, classified.reason) == (retryable, reason)
