"""Versioned v1 event payloads (the CloudEvents `data`) and their types and topics.

Adding a field needs a default; breaking a schema means a new `vN` type.
"""

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

import pycountry
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
)
from pydantic_core import PydanticCustomError

from shared.contract import topics
from shared.contract.money import Money


def _rfc3339_text(value: object) -> object:
    # Lax pydantic would read a number as a Unix timestamp; the contract says RFC 3339.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("invalid", "must be an RFC 3339 timestamp string")
    return value


def _country(code: str) -> str:
    if len(code) != 2 or not code.isupper() or pycountry.countries.get(alpha_2=code) is None:
        raise PydanticCustomError("invalid", "{code} is not an ISO 3166-1 alpha-2 country", {"code": code})
    return code


def _pattern(regex: str, what: str):
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise PydanticCustomError("invalid", "must be {what}", {"what": what})
        return value

    return AfterValidator(check)


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]
Id128 = Annotated[StrictStr, Field(min_length=1, max_length=128)]
Country = Annotated[StrictStr, AfterValidator(_country)]
Email = Annotated[StrictStr, Field(max_length=254), _pattern(r"[^@\s]+@[^@\s]+\.[^@\s]+", "an email address")]
Phone = Annotated[StrictStr, _pattern(r"\+[1-9][0-9]{6,14}", "an E.164 phone number like +4915112345678")]
Locale = Annotated[StrictStr, _pattern(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*", "a BCP 47 language tag like en or zh-CN")]


class Channel(StrEnum):
    CARD = "card"
    ALIPAY = "alipay"
    WECHAT_PAY = "wechat_pay"
    PAYPAL = "paypal"
    BANK_TRANSFER = "bank_transfer"
    WALLET = "wallet"


class Reason(StrEnum):
    DAMAGED = "damaged"
    NOT_RECEIVED = "not_received"
    NOT_AS_DESCRIBED = "not_as_described"
    DUPLICATE_CHARGE = "duplicate_charge"
    FRAUDULENT = "fraudulent"
    ORDER_CANCELED = "order_canceled"
    RETURNED = "returned"
    OTHER = "other"


class Status(StrEnum):
    """Statuses on the `refunds.status` feed."""

    ACCEPTED = "accepted"
    PENDING_REVIEW = "pending_review"
    ON_HOLD = "on_hold"
    APPROVED = "approved"
    DENIED = "denied"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RECONCILED = "reconciled"
    DISCREPANCY = "discrepancy"
    # The gateway returned a paid refund's money (after succeeded, reconciled or discrepancy).
    REVERSED = "reversed"
    REJECTED = "rejected"
    CANCELED = "canceled"


class ContractModel(BaseModel):
    # Unknown fields are ignored so producers can add fields without breaking consumers.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Payment(ContractModel):
    id: Id128
    gateway: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    channel: Channel
    captured: Money
    # When the payment was captured; approval's refund-window rules need it.
    captured_at: Timestamp | None = None


class Customer(ContractModel):
    """Who the refund is for. On `refund.requested.v1` the platform gives `email`/`phone`; from
    `refund.accepted.v1` on they travel only inside `contact_sealed`, which only notify can open
    (shared/contract/contact_seal.py), so approval, payout and reconcile see the customer's id, never how to
    reach them. `email`/`phone` stay optional here for v1 compatibility; intake never sends them onward."""

    id: Id128
    email: Email | None = None
    phone: Phone | None = None
    locale: Locale = "en"
    # The contact ({"email", "phone"} as given) sealed for notify; None when there is none.
    contact_sealed: StrictStr | None = None


class RefundRequested(ContractModel):
    """`refund.requested.v1`: a platform asks for a refund (source = the platform)."""

    request_id: Id128
    order_id: Id128
    payment: Payment
    amount: Money
    customer: Customer
    region: Country
    reason: Reason
    note: Annotated[StrictStr, Field(max_length=1000)] | None = None
    requested_at: Timestamp
    items: list[dict] | None = None
    metadata: Annotated[dict[StrictStr, StrictStr], Field(max_length=20)] | None = None


class RefundEvent(ContractModel):
    """What every lifecycle event carries, so any consumer can place it."""

    refund_id: str
    request_id: str
    source: str
    order_id: str
    amount: Money
    channel: Channel
    region: str
    reason_codes: list[str] = []
    drill: StrictBool = False


class RefundAccepted(RefundEvent):
    """`refund.accepted.v1`: intake opened a ticket; carries the full request onward."""

    payment: Payment
    customer: Customer
    reason: Reason
    note: str | None = None
    requested_at: datetime
    accepted_at: datetime
    items: list[dict] | None = None
    metadata: dict[str, str] | None = None
    # The ticket's due time per stage (intake, approval, payout, reconcile, notify), from the SLA table.
    deadlines: dict[str, datetime] | None = None


class FieldError(ContractModel):
    """One broken rule of a rejected request: the field's path, a code (`missing`, `invalid`, …), a message."""

    field: str
    code: str
    message: str


class RefundRejected(ContractModel):
    """`refund.rejected.v1`: the request broke the contract; every problem is named."""

    refund_id: str | None = None
    request_id: str | None = None
    source: str | None = None
    order_id: str | None = None
    amount: Money | None = None
    errors: list[FieldError]
    rejected_at: datetime


class RefundApproved(RefundAccepted):
    """`refund.approved.v1`: policy approved the refund; carries the ticket to payout."""

    policy_version: str
    approved_at: datetime


class RefundDenied(RefundEvent):
    """`refund.denied.v1`: policy, a reviewer or an expired review or hold denied the refund; reason_codes say why."""

    policy_version: str
    denied_at: datetime


class RefundHeld(RefundEvent):
    """`refund.held.v1`: a risk rule stopped the refund (`on_hold`); reason_codes say which."""

    held_at: datetime
    due_at: datetime | None = None


class RefundReviewRequested(RefundEvent):
    """`refund.review-requested.v1` (on `refunds.held`): policy wants people to decide (`pending_review`)."""

    policy_version: str
    required_approvals: int = 1
    review_requested_at: datetime
    due_at: datetime | None = None


class RefundReviewEscalated(RefundEvent):
    """`refund.review-escalated.v1` (on `refunds.held`): a review or hold passed its SLA. No status change."""

    waiting_since: datetime
    due_at: datetime
    escalated_at: datetime


class RefundReviewReopened(RefundEvent):
    """`refund.review-reopened.v1` (on `refunds.held`): a senior reviewer put an expired review or hold
    back in the queue, with a reason and new deadlines. No status change (it is still waiting)."""

    kind: Literal["review", "hold"]
    reopened_by: str
    note: str  # the senior reviewer's reason for reopening
    due_at: datetime
    expires_at: datetime
    reopened_at: datetime


# A refund's payouts are numbered from 1; an exit out of a failed payout (new destination, re-route,
# paid outside the pipeline) makes the next attempt. A consumer orders one refund's payout events by
# attempt first: nothing of an older attempt moves a refund that a newer attempt has moved.
Attempt = Annotated[int, Field(ge=1)]
ExitKind = Literal["new_destination", "reroute", "paid_outside"]


class PayoutSubmitted(RefundEvent):
    """`refund.payout-submitted.v1`: payout recorded its intent to pay; the gateway is asked next."""

    gateway: str
    payout_id: str
    submitted_at: datetime
    attempt: Attempt = 1
    # When the customer should have the money, if payout knows it (settlement calendar).
    eta: datetime | None = None


class RefundPaid(RefundEvent):
    """`refund.paid.v1`: the gateway paid the refund; gateway_ref is its reference for reconciliation."""

    gateway: str
    payout_id: str
    gateway_ref: str
    paid_at: datetime
    eta: datetime | None = None
    attempt: Attempt = 1
    # Staff recorded that the money reached the customer outside the pipeline (gateway_ref is their
    # reference); reconcile opens it as a `paid_outside` discrepancy, reconciled by hand.
    paid_outside: StrictBool = False
    # What the merchant's balance moves by, when it settles in another currency than `amount`.
    settlement_amount: Money | None = None


class PayoutFailed(RefundEvent):
    """`refund.payout-failed.v1`: the payout failed, or, with a failure_reason starting with
    shared/contract/lifecycle.py's REVERSAL_REASON, the gateway returned a paid refund's money."""

    gateway: str
    payout_id: str
    failure_reason: str
    failed_at: datetime
    attempt: Attempt = 1


class PayoutExitRequested(RefundEvent):
    """`refund.payout-exit-requested.v1` (on `refunds.payout-exits`): someone chose a way out of a failed
    payout — the customer's new destination, a re-route by staff, or money paid outside the pipeline.
    Intake answers with `refund.reinstated.v1` once the amount is reserved on the payment again (a
    failed payout gave it back), or `refund.reinstatement-refused.v1`. No status change."""

    attempt: Attempt  # the attempt the exit would make (the failed one + 1)
    exit: ExitKind
    requested_by: str  # a staff user id, or `customer`
    requested_at: datetime


class RefundReinstated(RefundEvent):
    """`refund.reinstated.v1` (on `refunds.reinstated`): intake reserved the refund's amount on its
    payment's refundable balance again, for `attempt`. Payout may act on the exit. No status change."""

    attempt: Attempt
    reinstated_at: datetime


class ReinstatementRefused(RefundEvent):
    """`refund.reinstatement-refused.v1` (on `refunds.reinstated`): the payment's balance no longer covers
    the amount (another refund used it) or the ticket cannot take another attempt; the refund stays `failed`."""

    attempt: Attempt
    errors: list[FieldError]
    refused_at: datetime


class PayoutRedriven(RefundEvent):
    """`refund.payout-redriven.v1` (on `refunds.payout-submitted`): an exit re-drives a failed refund:
    `failed` → `processing` under a new attempt, a new payout id and a new idempotency key."""

    attempt: Attempt
    exit: ExitKind
    gateway: str
    payout_id: str
    redriven_at: datetime


class DestinationProvided(ContractModel):
    """`refund.destination-provided.v1` (on `refunds.destinations`, from notify): on the signed customer
    page, the customer of a failed refund gave a new place to pay it. The bank account is sealed for
    payout (`shared/contract/contact_seal.py`, payout's key); `summary` is safe to show (masked)."""

    refund_id: str
    channel: Channel
    destination_sealed: str
    summary: str
    provided_at: datetime

class RefundReconciled(RefundEvent):
    """`refund.reconciled.v1`: the gateway's settlement report matches the payout."""

    gateway_ref: str
    settled_amount: Money
    reconciled_at: datetime


class RefundDiscrepancy(RefundEvent):
    """`refund.discrepancy.v1`: the payout and the gateway's settlement reports do not match; category says how."""

    gateway_ref: str
    category: str
    settled_amount: Money | None = None
    detected_at: datetime


class RefundStatus(ContractModel):
    """`refund.status.v1` on the compacted `refunds.status` feed, key = refund_id."""

    refund_id: str
    request_id: str | None
    source: str | None
    order_id: str | None
    status: Status
    amount: Money | None
    reason_codes: list[str] = []
    eta: datetime | None = None
    updated_at: datetime
    deadlines: dict[str, datetime] | None = None
    # Strictly increasing per refund: a consumer drops a record whose sequence is not above the
    # last one it applied (a republished older snapshot). 0 only on records from before it existed.
    sequence: int = 0


class DeadLetter(ContractModel):
    """`refund.dead-lettered.v1` on `refunds.dlq`: a record a stage could not use (not a CloudEvent, from an
    untrusted source, or failing every retry), with its raw bytes, the error and where it was."""

    topic: str
    partition: int
    offset: int
    key: str | None
    raw_base64: str
    headers: dict[str, str]
    error: str
    dead_lettered_at: datetime


# type -> (payload model, topic it travels on)
EVENT_TYPES: dict[str, tuple[type[BaseModel], str]] = {
    "refund.requested.v1": (RefundRequested, topics.REQUESTED),
    "refund.accepted.v1": (RefundAccepted, topics.ACCEPTED),
    "refund.rejected.v1": (RefundRejected, topics.REJECTED),
    "refund.approved.v1": (RefundApproved, topics.APPROVED),
    "refund.denied.v1": (RefundDenied, topics.DENIED),
    "refund.held.v1": (RefundHeld, topics.HELD),
    "refund.review-requested.v1": (RefundReviewRequested, topics.HELD),
    "refund.review-escalated.v1": (RefundReviewEscalated, topics.HELD),
    "refund.payout-submitted.v1": (PayoutSubmitted, topics.PAYOUT_SUBMITTED),
    "refund.paid.v1": (RefundPaid, topics.PAID),
    "refund.payout-failed.v1": (PayoutFailed, topics.PAYOUT_FAILED),
    "refund.review-reopened.v1": (RefundReviewReopened, topics.HELD),
    "refund.payout-exit-requested.v1": (PayoutExitRequested, topics.PAYOUT_EXITS),
    "refund.reinstated.v1": (RefundReinstated, topics.REINSTATED),
    "refund.reinstatement-refused.v1": (ReinstatementRefused, topics.REINSTATED),
    "refund.payout-redriven.v1": (PayoutRedriven, topics.PAYOUT_SUBMITTED),
    "refund.destination-provided.v1": (DestinationProvided, topics.DESTINATIONS),
    "refund.reconciled.v1": (RefundReconciled, topics.RECONCILED),
    "refund.discrepancy.v1": (RefundDiscrepancy, topics.DISCREPANCY),
    "refund.status.v1": (RefundStatus, topics.STATUS),
    "refund.dead-lettered.v1": (DeadLetter, topics.DLQ),
}
TYPE_OF: dict[type[BaseModel], str] = {model: name for name, (model, _) in EVENT_TYPES.items()}
