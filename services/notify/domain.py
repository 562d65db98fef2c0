"""The status projection's and the notifications' rules. Pure: no I/O.

A status never goes backwards: an event moves a refund only to a later stage,
and nothing moves a refund out of a terminal status.
"""

from datetime import datetime, timedelta
from enum import StrEnum

from shared.events import Status
from shared.lifecycle import ENDED_WITHOUT_MONEY, PROGRESS, RANK, advances, status_of  # noqa: F401 (re-exported)

# Calendar days from payout until the money is with the customer, per channel,
# used only when payout's event carries no ETA of its own.
FUNDS_DAYS = {"card": 5, "alipay": 1, "wechat_pay": 1, "paypal": 3, "bank_transfer": 5, "wallet": 1}


class Milestone(StrEnum):
    """What a customer is told about, once each."""

    RECEIVED = "received"
    APPROVED = "approved"
    DENIED = "denied"
    PAID = "paid"
    COMPLETED = "completed"
    ACTION_NEEDED = "action_needed"
    REVERSED = "reversed"


MILESTONE_OF_STATUS = {
    Status.ACCEPTED: Milestone.RECEIVED,
    Status.APPROVED: Milestone.APPROVED,
    Status.DENIED: Milestone.DENIED,
    Status.SUCCEEDED: Milestone.PAID,
    Status.RECONCILED: Milestone.COMPLETED,
    # The payout could not reach the customer's account: they must give us another one.
    Status.FAILED: Milestone.ACTION_NEEDED,
    # The gateway returned the money after paying it out: the customer must not think it arrived.
    Status.REVERSED: Milestone.REVERSED,
}

SUPPORTED_LOCALES = ("en", "zh-CN")


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
