"""The status projection's rules. Pure: no I/O.

A status never goes backwards: an event moves a refund only to a later stage,
and nothing moves a refund out of a terminal status.
"""

from datetime import datetime, timedelta

from shared.events import TERMINAL_STATUSES, Status

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

# A released hold may still need a review, so pending_review ranks after on_hold.
RANK = {
    Status.ACCEPTED: 1, Status.ON_HOLD: 2, Status.PENDING_REVIEW: 3,
    Status.APPROVED: 4, Status.DENIED: 4, Status.PROCESSING: 5,
    Status.SUCCEEDED: 6, Status.FAILED: 6, Status.DISCREPANCY: 7, Status.RECONCILED: 8,
    Status.REJECTED: 9, Status.CANCELED: 9,
}

# Calendar days from payout until the money is with the customer, per channel.
# Business-day calendars per region arrive with the payout issue (#4).
FUNDS_DAYS = {"card": 5, "alipay": 1, "wechat_pay": 1, "paypal": 3, "bank_transfer": 5, "wallet": 1}


def advances(current: Status | None, new: Status) -> bool:
    """Whether `new` may replace `current` on the feed."""
    if current is None:
        return True
    return current not in TERMINAL_STATUSES and RANK[new] > RANK[current]


def eta(status: Status, channel: str | None, since: datetime) -> datetime | None:
    """When the customer should have the money; None once that is moot."""
    if status in (Status.REJECTED, Status.DENIED, Status.FAILED, Status.CANCELED) or channel is None:
        return None
    return since + timedelta(days=FUNDS_DAYS.get(channel, 5))
