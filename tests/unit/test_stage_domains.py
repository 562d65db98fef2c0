from datetime import UTC, datetime

import pytest

from services.notify.domain import RANK, STATUS_OF_TYPE, advances, eta
from services.reconcile.domain import match
from shared.events import TERMINAL_STATUSES, Status

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
def test_nothing_leaves_a_terminal_status(terminal):
    assert not any(advances(terminal, other) for other in Status)


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
