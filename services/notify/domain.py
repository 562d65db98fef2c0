"""The status projection's and the notifications' rules. Pure: no I/O.

A status never goes backwards: an event moves a refund only to a later stage,
and nothing moves a refund out of a terminal status.
"""

from datetime import datetime, timedelta
from enum import StrEnum

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

# How far along the customer's refund is, in percent, for the progress bar.
PROGRESS = {
    Status.ACCEPTED: 20, Status.PENDING_REVIEW: 30, Status.ON_HOLD: 30, Status.APPROVED: 45,
    Status.PROCESSING: 60, Status.SUCCEEDED: 85, Status.DISCREPANCY: 90, Status.RECONCILED: 100,
    Status.DENIED: 100, Status.FAILED: 100, Status.REJECTED: 100, Status.CANCELED: 100,
}

# Calendar days from payout until the money is with the customer, per channel,
# used only when payout's event carries no ETA of its own.
FUNDS_DAYS = {"card": 5, "alipay": 1, "wechat_pay": 1, "paypal": 3, "bank_transfer": 5, "wallet": 1}
ENDED_WITHOUT_MONEY = frozenset({Status.REJECTED, Status.DENIED, Status.FAILED, Status.CANCELED})


class Milestone(StrEnum):
    """What a customer is told about, once each."""

    RECEIVED = "received"
    APPROVED = "approved"
    DENIED = "denied"
    PAID = "paid"
    COMPLETED = "completed"
    ACTION_NEEDED = "action_needed"


MILESTONE_OF_STATUS = {
    Status.ACCEPTED: Milestone.RECEIVED,
    Status.APPROVED: Milestone.APPROVED,
    Status.DENIED: Milestone.DENIED,
    Status.SUCCEEDED: Milestone.PAID,
    Status.RECONCILED: Milestone.COMPLETED,
    # The payout could not reach the customer's account: they must give us another one.
    Status.FAILED: Milestone.ACTION_NEEDED,
}

SUPPORTED_LOCALES = ("en", "zh-CN")


def advances(current: Status | None, new: Status) -> bool:
    """Whether `new` may replace `current` on the feed."""
    if current is None:
        return True
    return current not in TERMINAL_STATUSES and RANK[new] > RANK[current]


def eta(status: Status, channel: str | None, since: datetime, *, announced: datetime | None = None,
        previous: datetime | None = None) -> datetime | None:
    """When the customer should have the money; None once that is moot.

    Payout's own ETA (`announced`, from its settlement calendar) wins; once the
    money is on its way an earlier ETA is kept rather than re-estimated.
    """
    if status in ENDED_WITHOUT_MONEY or channel is None:
        return None
    if announced is not None:
        return announced
    if previous is not None and RANK[status] >= RANK[Status.PROCESSING]:
        return previous
    return since + timedelta(days=FUNDS_DAYS.get(channel, 5))


def instant(value: str | None) -> datetime | None:
    """An optional ISO 8601 time, as events and queued notifications carry it."""
    return datetime.fromisoformat(value) if value else None


def customer_locale(tag: str | None) -> str:
    """The template locale for a BCP 47 tag: any Chinese gets zh-CN, everything else en."""
    if tag and tag.lower().split("-")[0] == "zh":
        return "zh-CN"
    return "en"


def retry_delay_seconds(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff after `attempts` failed sends."""
    return min(cap, base * 2 ** max(attempts - 1, 0))


def timeline(stages: dict[str, str]) -> list[dict[str, str]]:
    """Stage timestamps in pipeline order (not arrival order)."""
    known = [(name, at) for name, at in stages.items() if name in Status.__members__.values()]
    return [{"status": name, "at": at} for name, at in sorted(known, key=lambda s: (RANK[Status(s[0])], s[1]))]
