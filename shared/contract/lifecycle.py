"""The refund lifecycle in one place: the stages in order; each lifecycle event with the stage that
emits it, its topic, the status it puts a refund in and the stage the refund is in after it; how the
statuses order, which end the refund, how far along each is, and which give the amount back.

Every service derives what it needs from here (notify's projection and stuck-stage watch, intake's
balance release, the SLA stages, the topics notify follows, the processes devstack runs, the tools
and tests), so a stage, an event or a status is described once.
"""

from dataclasses import dataclass

from shared.contract.events import EVENT_TYPES, Status

# The ticket's stages, in the order a refund passes them; each is one service.
STAGES = ("intake", "approval", "payout", "reconcile", "notify")
# The stage of a refund that has left the stages that act on it (notify only tells).
DONE = "done"

# payout's `failure_reason` for a paid refund whose money the gateway returned ("…:<gateway reason>").
REVERSAL_REASON = "reversed_after_success"


@dataclass(frozen=True)
class StatusFacts:
    rank: int  # a status only moves to a higher rank (with the exceptions in `advances`)
    progress: int  # percent, for the customer's progress bar
    terminal: bool = False
    # The refund ended without money reaching the customer (or the money came back): its amount
    # goes back to the payment's refundable balance, once.
    releases_balance: bool = False


# A released hold may still need a review, so pending_review ranks after on_hold.
LIFECYCLE: dict[Status, StatusFacts] = {
    Status.ACCEPTED: StatusFacts(rank=1, progress=20),
    Status.ON_HOLD: StatusFacts(rank=2, progress=30),
    Status.PENDING_REVIEW: StatusFacts(rank=3, progress=30),
    Status.APPROVED: StatusFacts(rank=4, progress=45),
    Status.DENIED: StatusFacts(rank=4, progress=100, terminal=True, releases_balance=True),
    Status.PROCESSING: StatusFacts(rank=5, progress=60),
    Status.SUCCEEDED: StatusFacts(rank=6, progress=85),
    Status.FAILED: StatusFacts(rank=6, progress=100, terminal=True, releases_balance=True),
    Status.DISCREPANCY: StatusFacts(rank=7, progress=90),
    Status.RECONCILED: StatusFacts(rank=8, progress=100, terminal=True),
    Status.REVERSED: StatusFacts(rank=9, progress=100, terminal=True, releases_balance=True),
    Status.REJECTED: StatusFacts(rank=10, progress=100, terminal=True, releases_balance=True),
    Status.CANCELED: StatusFacts(rank=10, progress=100, terminal=True, releases_balance=True),
}

RANK = {status: facts.rank for status, facts in LIFECYCLE.items()}
PROGRESS = {status: facts.progress for status, facts in LIFECYCLE.items()}
TERMINAL_STATUSES = frozenset(status for status, facts in LIFECYCLE.items() if facts.terminal)
RELEASES_BALANCE = frozenset(status for status, facts in LIFECYCLE.items() if facts.releases_balance)
# Ended with no money at the customer: no ETA to show.
ENDED_WITHOUT_MONEY = RELEASES_BALANCE



@dataclass(frozen=True)
class Step:
    """One lifecycle event: the stage that emits it, the status it puts a refund in (payout-failed: see
    `status_of`), and the stage the refund is in once it happened (a later stage never moves back)."""

    event_type: str
    emitted_by: str
    status: Status
    stage_after: str

    @property
    def topic(self) -> str:
        return EVENT_TYPES[self.event_type][1]


STEPS: tuple[Step, ...] = (
    Step("refund.accepted.v1", "intake", Status.ACCEPTED, "approval"),
    Step("refund.rejected.v1", "intake", Status.REJECTED, DONE),
    Step("refund.held.v1", "approval", Status.ON_HOLD, "approval"),
    Step("refund.review-requested.v1", "approval", Status.PENDING_REVIEW, "approval"),
    Step("refund.approved.v1", "approval", Status.APPROVED, "payout"),
    Step("refund.denied.v1", "approval", Status.DENIED, DONE),
    Step("refund.payout-submitted.v1", "payout", Status.PROCESSING, "payout"),
    Step("refund.paid.v1", "payout", Status.SUCCEEDED, "reconcile"),
    Step("refund.payout-failed.v1", "payout", Status.FAILED, DONE),
    # An exit out of a failed payout (new destination, re-route): back in payout under a new attempt.
    Step("refund.payout-redriven.v1", "payout", Status.PROCESSING, "payout"),
    Step("refund.discrepancy.v1", "reconcile", Status.DISCREPANCY, DONE),
    Step("refund.reconciled.v1", "reconcile", Status.RECONCILED, DONE),
)

STATUS_OF_TYPE = {step.event_type: step.status for step in STEPS}
STAGE_AFTER = {step.event_type: step.stage_after for step in STEPS}
# The topics of the lifecycle events (what notify projects into the status feed), in stage order.
TOPICS = tuple(dict.fromkeys(step.topic for step in STEPS))
# The stages a refund waits in (and can be stuck in), in order: those some event leaves it in.
WAITING_STAGES = tuple(stage for stage in STAGES if stage in set(STAGE_AFTER.values()))


def is_reversal(failure_reason: str | None) -> bool:
    """Whether a `refund.payout-failed.v1` reports money returned after a successful payout."""
    return bool(failure_reason) and failure_reason.split(":", 1)[0] == REVERSAL_REASON


def status_of(event_type: str, data: object) -> Status | None:
    """The status `event_type` (with its `data`) puts a refund in; None for events that move no status."""
    status = STATUS_OF_TYPE.get(event_type)
    if status is Status.FAILED and isinstance(data, dict) and is_reversal(data.get("failure_reason")):
        return Status.REVERSED
    return status


# The events that may take a refund out of `failed` (SPEC.md: an explicit exit, each an event of its own).
REDRIVE_TYPES = frozenset({"refund.payout-redriven.v1"})


def advances(current: Status | None, new: Status, *, redrive: bool = False) -> bool:
    """Whether `new` may replace `current`: only forward, never out of a terminal status, except
    that money the gateway returned turns a reconciled refund `reversed`, and a re-drive (an event of
    `REDRIVE_TYPES`, of a newer payout attempt: the caller checks the attempt) turns `failed` `processing`."""
    if current is None:
        return True
    if new is Status.REVERSED and current is Status.RECONCILED:
        return True
    if redrive and current is Status.FAILED and new is Status.PROCESSING:
        return True
    return current not in TERMINAL_STATUSES and RANK[new] > RANK[current]
