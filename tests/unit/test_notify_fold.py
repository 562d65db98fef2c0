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


# -- payout attempts: a failed refund re-driven, older attempts never moving it ------------------

FAILED_1 = StatusRow("rf_1", status=Status.FAILED, source="shop-eu", channel="card", stage="done", stage_rank=4,
                     sequence=4, payout_attempt=1, timeline={"failed": "t4"},
                     history=[{"status": "failed", "at": "t4", "event_type": "refund.payout-failed.v1", "attempt": 1}])


def test_a_redrive_of_a_newer_attempt_takes_a_failed_refund_to_processing_and_on():
    steps = fold([event("payout-redriven", attempt=2, exit="new_destination"), event("paid", attempt=2),
                  event("reconciled")], {"rf_1": FAILED_1})["rf_1"]
    assert [(s.row.status, s.row.sequence, s.milestone) for s in steps] == [
        (Status.PROCESSING, 5, Milestone.REDRIVEN), (Status.SUCCEEDED, 6, Milestone.PAID),
        (Status.RECONCILED, 7, Milestone.COMPLETED)]
    assert steps[0].row.stage == "payout" and steps[0].row.eta is not None
    assert steps[-1].row.payout_attempt == 2
    assert [(e["status"], e["attempt"]) for e in domain.history_in_order(steps[-1].row.history)] == [
        ("failed", 1), ("processing", 2), ("succeeded", 2), ("reconciled", 2)]


def test_a_redrive_of_the_same_attempt_or_an_older_attempts_events_move_nothing():
    steps = fold([event("payout-redriven", attempt=1, exit="reroute"), event("payout-submitted"),
                  event("paid", attempt=1)], {"rf_1": FAILED_1})["rf_1"]
    assert [(s.row.status, s.milestone) for s in steps] == [(Status.FAILED, None)] * 3
    assert [s.row.sequence for s in steps] == [5, 6, 7] and steps[-1].row.stage == "done"


def test_an_older_attempts_failure_arriving_after_the_redrive_is_dropped():
    steps = fold([event("payout-redriven", attempt=2, exit="reroute"), event("payout-failed", attempt=1,
                                                                             failure_reason="account_closed")],
                 {"rf_1": FAILED_1})["rf_1"]
    assert [s.row.status for s in steps] == [Status.PROCESSING, Status.PROCESSING]
    assert steps[-1].row.stage == "payout"  # the stale failure does not take it out of payout either


def test_a_newer_attempts_outcome_before_its_redrive_still_ends_where_that_attempt_got_to():
    steps = fold([event("paid", attempt=2), event("payout-redriven", attempt=2, exit="reroute")],
                 {"rf_1": FAILED_1})["rf_1"]
    assert [s.row.status for s in steps] == [Status.SUCCEEDED, Status.SUCCEEDED]
    # Before its failure is seen, a redrive moves the attempt on, so the old attempt's failure is stale.
    processing = StatusRow("rf_1", status=Status.PROCESSING, channel="card", stage="payout", stage_rank=2,
                           sequence=3, payout_attempt=1)
    steps = fold([event("payout-redriven", attempt=2, exit="reroute"),
                  event("payout-failed", attempt=1, failure_reason="x"), event("payout-failed", attempt=2,
                                                                               failure_reason="y")],
                 {"rf_1": processing})["rf_1"]
    assert [s.row.status for s in steps] == [Status.PROCESSING, Status.PROCESSING, Status.FAILED]
    assert steps[-1].milestone == Milestone.ACTION_NEEDED


def test_a_milestone_again_under_a_newer_attempt_is_another_notification():
    steps = fold([event("payout-redriven", attempt=2, exit="reroute"),
                  event("payout-failed", attempt=2, failure_reason="y")], {"rf_1": FAILED_1})["rf_1"]
    queued = [n for step in steps for n in domain.notifications(step, [("email", "a@example.com")])]
    assert [(n.milestone, n.attempt) for n in queued] == [(Milestone.REDRIVEN, 2), (Milestone.ACTION_NEEDED, 2)]


def test_a_reopened_review_is_on_the_timeline_with_its_reason_code_while_still_waiting():
    waiting = StatusRow("rf_1", status=Status.PENDING_REVIEW, channel="card", stage="approval", stage_rank=1,
                        sequence=2, reason_codes=["above_ceiling"], updated_at=EARLIER)
    [step] = fold([LifecycleEvent("refund.review-reopened.v1", {"refund_id": "rf_1", "kind": "review", "note": "customer called"})],
                  {"rf_1": waiting})["rf_1"]
    row = step.row
    assert (row.status, row.sequence, row.reason_codes, row.updated_at, step.milestone) == (
        Status.PENDING_REVIEW, 3, ["review-reopened"], NOW, None)
    assert row.history[-1]["event_type"] == "refund.review-reopened.v1"
    moved_on = StatusRow("rf_1", status=Status.APPROVED, channel="card", sequence=3, reason_codes=["ok"])
    [late] = fold([LifecycleEvent("refund.review-reopened.v1", {"refund_id": "rf_1", "kind": "review"})], {"rf_1": moved_on})["rf_1"]
    assert (late.row.status, late.row.reason_codes, late.row.sequence) == (Status.APPROVED, ["ok"], 4)
    assert domain.refund_of("refund.review-reopened.v1", {"refund_id": "rf_1"}) == "rf_1"


def test_each_stage_is_done_when_an_event_leaves_it_and_a_redriven_payout_at_its_last_outcome():
    history = [{"status": "accepted", "at": "2026-11-25T09:00:00+00:00", "event_type": "refund.accepted.v1"},
               {"status": "approved", "at": "2026-11-25T09:05:00+00:00", "event_type": "refund.approved.v1"},
               {"status": "processing", "at": "2026-11-25T09:06:00+00:00", "event_type": "refund.payout-submitted.v1"},
               {"status": "failed", "at": "2026-11-25T09:07:00+00:00", "event_type": "refund.payout-failed.v1"},
               {"status": "processing", "at": "2026-11-25T10:00:00+00:00", "event_type": "refund.payout-redriven.v1"},
               {"status": "succeeded", "at": "2026-11-25T10:01:00+00:00", "event_type": "refund.paid.v1"}]
    done = domain.stage_times(history)
    assert done == {"intake": "2026-11-25T09:00:00+00:00", "approval": "2026-11-25T09:05:00+00:00",
                    "payout": "2026-11-25T10:01:00+00:00"}
    deadlines = {"intake": "2026-11-25T09:01:00+00:00", "approval": "2026-11-25T09:04:00+00:00",
                 "payout": "2026-11-25T11:00:00+00:00", "reconcile": "2026-11-25T09:20:00+00:00"}
    rows = domain.deadlines_vs_actual(deadlines, done, NOW)
    assert [(r["stage"], r["met"]) for r in rows] == [
        ("intake", True), ("approval", False), ("payout", True), ("reconcile", False), ("notify", None)]
