"""Notify's status projection folded in memory: a batch's events per refund, in order, with the
sequence, stage, timeline and milestones the status feed and the notification queue get."""

from datetime import UTC, datetime, timedelta

from services.notify import domain
from services.notify.domain import LifecycleEvent, Milestone, StatusRow
from shared.contract.events import Status

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
EARLIER = NOW - timedelta(hours=1)
ETA = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
DEADLINES = {"approval": "2026-11-25T10:00:00+00:00", "payout": "2026-11-26T10:00:00+00:00"}


def event(kind: str, refund_id: str = "rf_1", customer: dict | None = None, **data) -> LifecycleEvent:
    base = {"refund_id": refund_id, "request_id": f"req-{refund_id}", "source": "shop-eu", "order_id": "ord-7",
            "amount": {"value": 2500, "currency": "EUR"}, "channel": "card"}
    return LifecycleEvent(f"refund.{kind}.v1", {**base, **data}, customer)


def fold(events: list[LifecycleEvent], rows: dict[str, StatusRow] | None = None) -> dict[str, list[domain.Folded]]:
    return domain.fold_batch(rows or {}, domain.per_refund(events), NOW)


def test_accepted_approved_and_paid_in_one_batch_fold_to_paid_passing_each_milestone():
    steps = fold([event("accepted", customer={"id": "cus-1", "email": "a@example.com"},
                        accepted_at=EARLIER.isoformat(), deadlines=DEADLINES),
                  event("approved"), event("paid", eta=ETA.isoformat())])["rf_1"]
    row = steps[-1].row
    assert (row.status, row.sequence) == (Status.SUCCEEDED, 3)
    assert [s.milestone for s in steps] == [Milestone.RECEIVED, Milestone.APPROVED, Milestone.PAID]
    assert [s.row.sequence for s in steps] == [1, 2, 3]
    assert set(row.timeline) == {"accepted", "approved", "succeeded"}
    assert (row.stage, row.stage_rank, row.entered_at) == ("reconcile", 3, NOW)
    assert (row.eta, row.accepted_at, row.deadlines) == (ETA, EARLIER, DEADLINES)
    assert (row.source, row.request_id, row.amount) == ("shop-eu", "req-rf_1", {"value": 2500, "currency": "EUR"})
    assert row.customer == {"id": "cus-1", "email": "a@example.com"}


def test_each_milestone_is_queued_with_the_status_it_announced():
    steps = fold([event("accepted", customer={"id": "cus-1", "locale": "zh-Hans"}), event("approved")])["rf_1"]
    queued = [n for step in steps for n in domain.notifications(step, [("email", "a@example.com")])]
    assert [(n.milestone, n.context["status"], n.context["sequence"], n.locale) for n in queued] == [
        (Milestone.RECEIVED, "accepted", 1, "zh-CN"), (Milestone.APPROVED, "approved", 2, "zh-CN")]
    assert domain.notifications(fold([event("payout-submitted")])["rf_1"][0], [("email", "a@example.com")]) == []


def test_two_refunds_interleaved_each_fold_in_their_own_order():
    folded = fold([event("accepted", "rf_a"), event("accepted", "rf_b"), event("approved", "rf_a"),
                   event("denied", "rf_b", reason_codes=["refund-window-wallet"]), event("payout-submitted", "rf_a")])
    assert list(folded) == ["rf_a", "rf_b"]
    a, b = folded["rf_a"][-1].row, folded["rf_b"][-1].row
    assert (a.status, a.sequence, a.stage) == (Status.PROCESSING, 3, "payout")
    assert (b.status, b.sequence, b.stage, b.reason_codes) == (Status.DENIED, 2, "done", ["refund-window-wallet"])
    assert [s.milestone for s in folded["rf_a"]] == [Milestone.RECEIVED, Milestone.APPROVED, None]
    assert [s.milestone for s in folded["rf_b"]] == [Milestone.RECEIVED, Milestone.DENIED]
    assert b.eta is None  # denied: no money on its way


def test_late_and_repeated_events_count_in_the_sequence_but_move_nothing_back():
    stored = StatusRow("rf_1", status=Status.SUCCEEDED, source="shop-eu", channel="card", eta=ETA,
                       timeline={"accepted": "t1", "succeeded": "t3"}, updated_at=EARLIER, stage="reconcile",
                       stage_rank=3, entered_at=EARLIER, sequence=4, customer={"id": "cus-1"})
    steps = fold([event("approved"), event("paid"), event("accepted", customer={"id": "cus-1", "locale": "de"},
                                                          deadlines=DEADLINES, drill=True)], {"rf_1": stored})["rf_1"]
    row = steps[-1].row
    assert [s.milestone for s in steps] == [None, None, None]
    assert (row.status, row.sequence, row.eta, row.updated_at) == (Status.SUCCEEDED, 7, ETA, EARLIER)
    assert (row.stage, row.stage_rank, row.entered_at) == ("reconcile", 3, EARLIER)
    # A late status fills its gap in the timeline; one already there keeps its time.
    assert row.timeline == {"accepted": "t1", "approved": NOW.isoformat(), "succeeded": "t3"}
    # Still merged from a late event: the ticket's deadlines, the drill flag, the customer.
    assert (row.deadlines, row.drill, row.customer) == (DEADLINES, True, {"id": "cus-1", "locale": "de"})


def test_an_event_twice_in_a_batch_is_announced_once():
    steps = fold([event("accepted"), event("accepted")])["rf_1"]
    assert [(s.row.status, s.row.sequence, s.milestone) for s in steps] == [
        (Status.ACCEPTED, 1, Milestone.RECEIVED), (Status.ACCEPTED, 2, None)]


def test_a_late_stage_never_moves_the_watch_back_and_a_later_one_moves_it_on():
    folded = fold([event("paid"), event("approved"), event("reconciled")])["rf_1"]
    assert [(s.row.stage, s.row.entered_at) for s in folded] == [("reconcile", NOW)] * 2 + [("done", NOW)]
    assert folded[-1].row.status == Status.RECONCILED and folded[-1].row.sequence == 3


def test_money_returned_after_reconciliation_reverses_a_terminal_refund():
    stored = StatusRow("rf_1", status=Status.RECONCILED, channel="card", stage="done", stage_rank=4, sequence=5)
    steps = fold([event("payout-failed", failure_reason="reversed_after_success:chargeback")], {"rf_1": stored})
    assert [(s.row.status, s.row.sequence, s.milestone) for s in steps["rf_1"]] == [
        (Status.REVERSED, 6, Milestone.REVERSED)]


def test_payouts_eta_is_kept_once_the_money_moves():
    steps = fold([event("payout-submitted", eta=ETA.isoformat()), event("paid"), event("reconciled")])["rf_1"]
    assert [s.row.eta for s in steps] == [ETA, ETA, ETA]


def test_what_the_first_event_said_stays_unless_it_said_nothing():
    steps = fold([event("accepted", source="shop-eu", order_id="ord-1", channel=None),
                  event("approved", source="shop-other", order_id="ord-2", channel="wallet")])["rf_1"]
    row = steps[-1].row
    assert (row.source, row.order_id, row.channel) == ("shop-eu", "ord-1", "wallet")


def test_only_a_refunds_status_changing_events_are_folded():
    assert domain.refund_of("refund.accepted.v1", {"refund_id": "rf_1"}) == "rf_1"
    assert domain.refund_of("refund.rejected.v1", {"refund_id": None, "errors": []}) is None
    assert domain.refund_of("refund.review-escalated.v1", {"refund_id": "rf_1"}) is None
    assert domain.refund_of("refund.paid.v1", ["not", "an", "object"]) is None
