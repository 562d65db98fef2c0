"""The refund lifecycle in one table: which event puts a refund in which status, how the statuses
order, which end the refund, how far along each is, and which give the amount back to the payment.

Every service derives what it needs from here (notify's projection, intake's balance release,
the tools and tests), so a status is described once.
"""

from dataclasses import dataclass

from shared.events import Status

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

# The status each lifecycle event type puts a refund in (payout-failed: see `status_of`).
STATUS_OF_TYPE = {
    "refund.accepted.v1": Status.ACCEPTED,
    "refund.rejected.v1": Status.REJECTED,
    "refund.held.v1": Status.ON_HOLD,
    "refund.review-requested.v1": Status.PENDING_REVIEW,
    "refund.approved.v1": Status.APPROVED,
    "refund.denied.v1": Status.DENIED,
    "refund.payout-submitted.v1": Status.PROCESSING,
    "refund.paid.v1": Status.SUCCEEDED,
    "refund.payout-failed.v1": Status.FAILED,
    "refund.discrepancy.v1": Status.DISCREPANCY,
    "refund.reconciled.v1": Status.RECONCILED,
}


def is_reversal(failure_reason: str | None) -> bool:
    """Whether a `refund.payout-failed.v1` reports money returned after a successful payout."""
    return bool(failure_reason) and failure_reason.split(":", 1)[0] == REVERSAL_REASON


def status_of(event_type: str, data: object) -> Status | None:
    """The status `event_type` (with its `data`) puts a refund in; None for events that move no status."""
    status = STATUS_OF_TYPE.get(event_type)
    if status is Status.FAILED and isinstance(data, dict) and is_reversal(data.get("failure_reason")):
        return Status.REVERSED
    return status


def advances(current: Status | None, new: Status) -> bool:
    """Whether `new` may replace `current`: only forward, never out of a terminal status, except
    that money the gateway returned turns a reconciled refund `reversed`."""
    if current is None:
        return True
    if new is Status.REVERSED and current is Status.RECONCILED:
        return True
    return current not in TERMINAL_STATUSES and RANK[new] > RANK[current]
