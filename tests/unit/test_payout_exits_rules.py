"""The pure rules of exits out of a failed payout: when one may be taken, the attempts' keys, and when
intake reserves the amount again."""

import pytest

from services.intake.domain import ReservedTicket, reinstatement
from services.payout.domain import attempt_key, attempt_payout_id, exit_conflict
from services.payout.settings import PayoutSettings
from shared.contract import contact_seal
from shared.runtime.settings import ProductionRefused

SAFE = {"environment": "production", "staff_jwks_url": "https://idp.example.com/.well-known/jwks.json"}


@pytest.mark.parametrize(("status", "reason", "pending", "conflict"), [
    ("failed", "declined", False, None),
    ("failed", "gateway_not_configured", True, "already in progress"),
    ("succeeded", None, False, "the payout is succeeded"),
    ("pending", None, False, "the payout is pending"),
    ("reversed", "reversed_after_success:lost_or_stolen_card", False, "the payout is reversed"),
    ("failed", "reversed_after_success:x", False, "reversed after it succeeded"),
])
def test_an_exit_is_only_for_a_failed_payout_without_one_in_flight(status, reason, pending, conflict):
    found = exit_conflict(status, reason, pending)
    assert found is None if conflict is None else conflict in found


def test_each_attempt_has_its_own_key_and_payout_id_the_first_keeps_the_refunds():
    assert attempt_key("rf_1", 1) == "rf_1" and attempt_key("rf_1", 2) == "rf_1:2"
    assert attempt_payout_id("po_1", 1) == "po_1" and attempt_payout_id("po_1:2", 3) == "po_1:3"


FAILED = ReservedTicket(amount=3000, released_as="failed", payout_attempt=1)


@pytest.mark.parametrize(("ticket", "attempt", "refundable", "code"), [
    (FAILED, 2, 3000, None),  # exactly what is left
    (FAILED, 2, 2999, "exceeds_refundable"),
    (ReservedTicket(3000, None, 2), 2, 0, None),  # reserved for attempt 2 already: answered again
    (ReservedTicket(3000, None, 1), 2, 5000, "not_reinstatable"),  # never released: nothing to reinstate
    (ReservedTicket(3000, "denied", 1), 2, 5000, "not_reinstatable"),
    (ReservedTicket(3000, "reversed", 1), 2, 5000, "not_reinstatable"),
    (FAILED, 3, 5000, "not_reinstatable"),  # not the attempt after the failed one
    (None, 2, 5000, "unknown_refund"),
])
def test_intake_reserves_again_only_after_a_failed_payout_and_only_what_the_payment_has_left(
        ticket, attempt, refundable, code):
    refusal = reinstatement(ticket, attempt, refundable)
    assert (refusal.code if refusal else None) == code
    if code == "exceeds_refundable":
        assert refusal.field == "amount"


def test_production_refuses_the_local_destination_key(monkeypatch):
    # The simulator's routes are refused in production too: an integration session in the same run
    # exports GATEWAY_ROUTES.
    monkeypatch.delenv("GATEWAY_ROUTES", raising=False)
    private, _ = contact_seal.new_key_pair()
    assert PayoutSettings(**SAFE, destination_private_key=private).destination_private_key == private
    with pytest.raises(ProductionRefused, match="DESTINATION_PRIVATE_KEY is the public default"):
        PayoutSettings(**SAFE)
