from datetime import UTC, datetime

import pytest

from services.notify.domain import eta
from services.reconcile.domain import match
from shared.contract.events import Status
from shared.contract.lifecycle import RANK, STATUS_OF_TYPE, TERMINAL_STATUSES, advances, status_of

LIFECYCLE = [Status.ACCEPTED, Status.APPROVED, Status.PROCESSING, Status.SUCCEEDED, Status.RECONCILED]


def test_status_moves_forward_through_the_lifecycle():
    current = None
    for status in LIFECYCLE:
        assert advances(current, status)
        current = status


@pytest.mark.parametrize(("current", "late"), [
    (Status.APPROVED, Status.ACCEPTED),
    (Status.SUCCEEDED, Status.PROCESSING),
    (Status.RECONCILED, Status.SUCCEEDED),
    (Status.PROCESSING, Status.PROCESSING),  # a repeat is not a move
])
def test_late_or_repeated_events_never_move_status_backwards(current, late):
    assert not advances(current, late)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_nothing_leaves_a_terminal_status_but_a_reversal_of_reconciled(terminal):
    allowed = {Status.REVERSED} if terminal is Status.RECONCILED else set()
    assert {other for other in Status if advances(terminal, other)} == allowed


@pytest.mark.parametrize("paid", [Status.SUCCEEDED, Status.DISCREPANCY, Status.RECONCILED, Status.PROCESSING])
def test_a_reversal_after_payment_shows_whatever_arrived_first(paid):
    assert advances(paid, Status.REVERSED)
    assert not any(advances(Status.REVERSED, other) for other in Status)


def test_payout_failed_is_a_reversal_only_when_it_says_so():
    failed = "refund.payout-failed.v1"
    assert status_of(failed, {"failure_reason": "reversed_after_success:chargeback"}) is Status.REVERSED
    assert status_of(failed, {"failure_reason": "declined"}) is Status.FAILED
    assert status_of(failed, {"failure_reason": "not_reversed_after_success"}) is Status.FAILED


def test_every_lifecycle_event_type_maps_to_a_ranked_status():
    assert set(STATUS_OF_TYPE.values()) <= set(RANK)
    assert set(RANK) == set(Status)


def test_eta_is_none_once_money_will_not_move():
    now = datetime(2026, 11, 25, tzinfo=UTC)
    assert eta(Status.DENIED, "card", now) is None
    assert eta(Status.FAILED, "card", now) is None
    assert eta(Status.APPROVED, "alipay", now) > now


@pytest.mark.parametrize(("paid", "settled", "category"), [
    ((1000, "EUR"), (1000, "EUR"), "matched"),
    ((1000, "EUR"), (999, "EUR"), "amount_mismatch"),
    ((1000, "EUR"), (1000, "USD"), "currency_mismatch"),
])
def test_settlement_matching_to_the_minor_unit(paid, settled, category):
    assert match(*paid, *settled).category == category
