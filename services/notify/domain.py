"""The status projection's and the notifications' rules. Pure: no I/O.

A status never goes backwards: an event moves a refund only to a later stage,
and nothing moves a refund out of a terminal status. A batch's events are folded
here, per refund and in order, onto the rows store.py locked; store.py writes them back.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from shared.contract import lifecycle
from shared.contract.events import Status
from shared.contract.lifecycle import ENDED_WITHOUT_MONEY, PROGRESS, RANK, REDRIVE_TYPES, advances, status_of  # noqa: F401 (re-exported)

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
    # A failed payout is being paid again (a new attempt: the customer's new account, or a re-route).
    REDRIVEN = "redriven"


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

# The payout events: each is of one payout attempt (`attempt`, 1 unless it says otherwise).
PAYOUT_TYPES = frozenset(step.event_type for step in lifecycle.STEPS if step.emitted_by == "payout")
# Events that move no status but belong on the refund's timeline (the status is republished with them).
TIMELINE_TYPES = {"refund.review-reopened.v1": "review-reopened"}
# The statuses a reopened review or hold may find a refund in (still waiting for people).
REOPENABLE = {"review": Status.PENDING_REVIEW, "hold": Status.ON_HOLD}


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


def history_in_order(history: list[dict]) -> list[dict]:
    """The refund's history in the order it happened: payout attempt by attempt, each in pipeline order
    (a late event is placed where it belongs, not where it arrived), then by when notify saw it."""
    known = [e for e in history if e.get("status") in Status.__members__.values()]
    return sorted(known, key=lambda e: (e.get("attempt", 0), RANK[Status(e["status"])], e["at"]))


# The event that ends each stage's work on a refund (it leaves the stage that emitted it).
_ENDS_STAGE = {step.event_type: step.emitted_by for step in lifecycle.STEPS if step.stage_after != step.emitted_by}


def stage_times(history: list[dict]) -> dict[str, str]:
    """When each stage finished with the refund, from its history (a re-driven payout: the last time)."""
    done: dict[str, str] = {}
    for entry in history:
        if stage := _ENDS_STAGE.get(entry.get("event_type", "")):
            done[stage] = max(done.get(stage, entry["at"]), entry["at"])
    return done


def deadlines_vs_actual(deadlines: dict | None, done: dict[str, str], now: datetime) -> list[dict]:
    """Per stage, in pipeline order: when it was due, when it was done (None: not yet), and whether it
    kept its deadline (None while it is still open and not yet due)."""
    rows = []
    for stage in lifecycle.STAGES:
        due = instant(str(deadlines[stage])) if deadlines and deadlines.get(stage) else None
        finished = instant(done.get(stage))
        if due is None:
            met = None
        elif finished is not None:
            met = finished <= due
        else:
            met = False if now > due else None
        rows.append({"stage": stage, "due_at": due, "done_at": finished, "met": met})
    return rows


# -- the status projection ----------------------------------------------------------------------

# The stage a refund is in after each event (the stuck-stage watch, watch.py); a later stage never
# moves back. `done` = left the pipeline.
STAGE_AFTER = lifecycle.STAGE_AFTER
STAGE_RANK = {stage: rank for rank, stage in enumerate((*lifecycle.WAITING_STAGES, lifecycle.DONE), start=1)}


@dataclass(frozen=True)
class StatusRow:
    """A refund's row in the status projection (notify.refund_status). `status` None: no row yet."""

    refund_id: str
    status: Status | None = None
    request_id: str | None = None
    source: str | None = None
    order_id: str | None = None
    amount: dict | None = None
    channel: str | None = None
    reason_codes: list[str] = field(default_factory=list)
    eta: datetime | None = None
    # Status -> when notify saw it (ISO 8601): an advancing event sets its entry, a late one only fills a gap.
    timeline: dict[str, str] = field(default_factory=dict)
    updated_at: datetime | None = None
    customer: dict | None = None
    drill: bool = False
    deadlines: dict | None = None
    stage: str | None = None
    stage_rank: int | None = None
    entered_at: datetime | None = None
    accepted_at: datetime | None = None
    # One more per event folded: the status feed's `sequence`.
    sequence: int = 0
    # The latest payout attempt an event of which was applied (0: no payout event yet). Nothing of an
    # older attempt moves the status.
    payout_attempt: int = 0
    # Every status the refund was in and every timeline-only event, as folded: {"status", "at",
    # "event_type", "attempt"} (a status can repeat: processing again after a re-drive).
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class LifecycleEvent:
    """A lifecycle event as the projection reads it: its type, raw data, and the customer as notify
    keeps it (contact opened, seal dropped; None when the event carries none)."""

    type: str
    data: Mapping
    customer: dict | None = None

    @property
    def refund_id(self) -> str:
        return self.data["refund_id"]

    @property
    def status(self) -> Status | None:
        return status_of(self.type, self.data)

    @property
    def attempt(self) -> int | None:
        """The payout attempt a payout event is of; None for the other events."""
        if self.type not in PAYOUT_TYPES:
            return None
        attempt = self.data.get("attempt", 1)
        return attempt if isinstance(attempt, int) and attempt >= 1 else 1


@dataclass(frozen=True)
class Folded:
    """One event folded: the row right after it, and the milestone it reached (None: no news)."""

    event: LifecycleEvent
    row: StatusRow
    milestone: Milestone | None = None


@dataclass(frozen=True)
class Notification:
    """A message to queue: a refund's milestone, for one recipient on one channel."""

    refund_id: str
    milestone: Milestone
    channel: str
    recipient: str
    locale: str
    # What the message says, as the row stood when the milestone was reached.
    context: dict
    # The payout attempt it is of (1 before any payout): a milestone may come again with a new attempt.
    attempt: int = 1


def notifications(step: Folded, recipients: Iterable[tuple[str, str]]) -> list[Notification]:
    """The messages announcing `step`'s milestone to each (channel, recipient); none if it reached none."""
    row = step.row
    if step.milestone is None:
        return []
    context = {"status": row.status.value, "eta": row.eta.isoformat() if row.eta else None,
               "reason_codes": list(row.reason_codes), "sequence": row.sequence}
    locale = customer_locale((row.customer or {}).get("locale"))
    return [Notification(row.refund_id, step.milestone, channel, recipient, locale, context,
                         max(row.payout_attempt, 1)) for channel, recipient in recipients]


def refund_of(event_type: str, data: object) -> str | None:
    """The refund whose status (or timeline) the event moves; None for anything else (e.g. a rejection
    nobody can be told about, or an event that moves neither)."""
    if status_of(event_type, data) is None and event_type not in TIMELINE_TYPES:
        return None
    if not isinstance(data, dict) or not data.get("refund_id"):
        return None
    return data["refund_id"]


def moves(row: StatusRow, event: LifecycleEvent) -> bool:
    """Whether `event` moves the refund's status. One refund's payout events order by attempt first:
    an event of an older attempt than the row's latest never moves it; one of a newer attempt re-drives
    a `failed` refund (the re-drive itself, or a later event of that attempt arriving before it: the
    attempt says a re-drive happened, and the status goes where that attempt has got to)."""
    new, attempt = event.status, event.attempt
    if attempt is not None and attempt < row.payout_attempt:
        return False
    if attempt is not None and attempt > max(row.payout_attempt, 1) and row.status is Status.FAILED:
        return advances(Status.FAILED, Status.PROCESSING, redrive=True) and (
            new is Status.PROCESSING or advances(Status.PROCESSING, new))
    return advances(row.status, new, redrive=event.type in REDRIVE_TYPES and attempt is not None
                    and attempt > row.payout_attempt)


def _entry(status: Status, event: LifecycleEvent, attempt: int, now: datetime) -> dict:
    return {"status": status.value, "at": now.isoformat(), "event_type": event.type, "attempt": attempt}


def fold(row: StatusRow, event: LifecycleEvent, now: datetime) -> Folded:
    """The row after `event`, seen at `now`. An event that does not advance the status (late or
    repeated, or of an older payout attempt) still counts in `sequence`, merges the stage, deadlines,
    drill and customer, and remembers when its status happened if nothing did yet."""
    if event.type in TIMELINE_TYPES:
        return _noted(row, event, now)
    data, new = event.data, event.status
    stage = STAGE_AFTER[event.type]
    advancing = moves(row, event)
    attempt = max(row.payout_attempt, event.attempt or 0)
    stale = event.attempt is not None and event.attempt < row.payout_attempt
    # A re-drive takes a refund that had left the pipeline (failed) back into payout.
    enters = not stale and STAGE_RANK[stage] > (row.stage_rank or 0) or (advancing and row.status is Status.FAILED)
    merged = replace(
        row, sequence=row.sequence + 1, deadlines=_first(row.deadlines, data.get("deadlines")),
        drill=row.drill or bool(data.get("drill")), stage=stage if enters else row.stage,
        entered_at=now if enters else row.entered_at,
        stage_rank=STAGE_RANK[stage] if enters else max(row.stage_rank or 0, STAGE_RANK[stage]),
        accepted_at=_first(row.accepted_at, instant(data.get("accepted_at"))), payout_attempt=attempt)
    # The statuses before a payout are of no attempt (0); later ones of the attempt they came in.
    entry_attempt = event.attempt or (max(row.payout_attempt, 1) if RANK[new] >= RANK[Status.PROCESSING] else 0)
    if not advancing:
        customer = row.customer if event.customer is None else {**(row.customer or {}), **event.customer}
        seen = any(e["status"] == new.value and e.get("attempt", 0) == entry_attempt for e in row.history)
        history = row.history if seen else [*row.history, _entry(new, event, entry_attempt, now)]
        return Folded(event, replace(merged, timeline={new.value: now.isoformat(), **row.timeline},
                                     customer=customer, history=history))
    first = row.status is None
    channel = data.get("channel") or row.channel
    milestone = MILESTONE_OF_STATUS.get(new)
    if row.status is Status.FAILED and new is Status.PROCESSING:
        milestone = Milestone.REDRIVEN
    return Folded(event, replace(
        merged, status=new, updated_at=now, timeline={**row.timeline, new.value: now.isoformat()},
        history=[*row.history, _entry(new, event, entry_attempt, now)],
        reason_codes=data.get("reason_codes") or [e["code"] for e in data.get("errors", [])],
        eta=eta(new, channel, now, announced=instant(data.get("eta")), previous=row.eta),
        source=data.get("source") if first else row.source,
        request_id=_first(row.request_id, data.get("request_id")), order_id=_first(row.order_id, data.get("order_id")),
        amount=_first(row.amount, data.get("amount")), channel=_first(row.channel, data.get("channel")),
        customer=event.customer if first else {**(row.customer or {}), **(event.customer or {})},
    ), milestone)


def _noted(row: StatusRow, event: LifecycleEvent, now: datetime) -> Folded:
    """A timeline-only event (a reopened review): on the timeline with the status the refund is in, and
    counted in `sequence`. Its reason code is published with the status only while the refund still
    waits where it was reopened; a refund that has moved on (a late event) keeps its own."""
    if row.status is None:  # nothing to hang it on: no status yet (cannot happen in order)
        return Folded(event, row)
    code = TIMELINE_TYPES[event.type]
    still_waiting = REOPENABLE.get(event.data.get("kind")) is row.status
    entry = {**_entry(row.status, event, row.payout_attempt, now), "note": code}
    return Folded(event, replace(
        row, sequence=row.sequence + 1, history=[*row.history, entry],
        reason_codes=[code] if still_waiting else row.reason_codes,
        updated_at=now if still_waiting else row.updated_at))


def fold_all(row: StatusRow, events: Iterable[LifecycleEvent], now: datetime) -> list[Folded]:
    """One refund's events folded in order, each step as `fold` returns it (the last has the row to save)."""
    steps: list[Folded] = []
    for event in events:
        steps.append(fold(row, event, now))
        row = steps[-1].row
    return steps


def per_refund(events: Iterable[LifecycleEvent]) -> dict[str, list[LifecycleEvent]]:
    """The events grouped by refund, each refund's in the order given (refunds in order of first event)."""
    grouped: dict[str, list[LifecycleEvent]] = {}
    for event in events:
        grouped.setdefault(event.refund_id, []).append(event)
    return grouped


def fold_batch(rows: Mapping[str, StatusRow], by_refund: Mapping[str, Iterable[LifecycleEvent]],
               now: datetime) -> dict[str, list[Folded]]:
    """Each refund's events folded onto its row (`rows`; a refund without one starts a row)."""
    return {refund_id: fold_all(rows.get(refund_id) or StatusRow(refund_id), events, now)
            for refund_id, events in by_refund.items()}


def _first(kept, given):
    """The value already kept, else the one given (SQL COALESCE: only None counts as missing)."""
    return kept if kept is not None else given
