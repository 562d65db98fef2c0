"""Intake decisions: which contract rules a request breaks, and whether the payment can cover it.

Pure: no I/O. Errors use the contract's codes (SPEC.md "Outcomes").
"""

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property

from pydantic import ValidationError

from shared.contract.events import Customer, FieldError, RefundRequested
from shared.contract.ids import refund_id_for
from shared.contract.money import Money

REQUESTED_TYPE = "refund.requested.v1"

_CODE_OF_PYDANTIC_TYPE = {
    "missing": "missing",
    "string_too_short": "missing",  # "" is a missing value, not a short one
    "string_too_long": "too_long",
    "too_long": "too_long",
    "invalid_currency": "invalid_currency",
    "not_positive": "not_positive",
}


def field_errors(error: ValidationError, prefix: str = "") -> list[FieldError]:
    """Every problem pydantic found, as contract errors with dotted field paths."""
    found = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"])
        found.append(FieldError(
            field=f"{prefix}{path}" if path else prefix.rstrip(".") or "data",
            code=_CODE_OF_PYDANTIC_TYPE.get(item["type"], "invalid"),
            message=item["msg"],
        ))
    return found


def validate_request(event_type: str, data: object) -> RefundRequested | list[FieldError]:
    """The request if it keeps every contract rule, else all the rules it breaks at once."""
    errors: list[FieldError] = []
    if event_type != REQUESTED_TYPE:
        errors.append(FieldError(field="type", code="invalid",
                                 message=f"expected {REQUESTED_TYPE}, got {event_type!r}"))
    if not isinstance(data, dict):
        errors.append(FieldError(field="data", code="missing" if data is None else "invalid",
                                 message="data must be a JSON object"))
        return errors
    try:
        request = RefundRequested.model_validate(data)
    except ValidationError as invalid:
        errors += field_errors(invalid)
        errors += _cross_field_errors(data)
        return errors
    errors += _amount_errors(request.amount, request.payment.captured)
    return errors or request


def _amount_errors(amount: Money, captured: Money) -> list[FieldError]:
    if amount.value == 0:
        return [FieldError(field="amount.value", code="not_positive", message="amount must be greater than zero")]
    if amount.currency != captured.currency:
        return [FieldError(field="amount.currency", code="currency_mismatch",
                           message=f"amount is in {amount.currency} but the payment was captured in {captured.currency}")]
    if amount.value > captured.value:
        return [FieldError(field="amount.value", code="exceeds_refundable",
                           message=f"amount {amount.format()} exceeds the captured {captured.format()}")]
    return []


def _cross_field_errors(data: dict) -> list[FieldError]:
    # When other fields are broken, still report amount rules whose inputs are valid.
    try:
        amount = Money.model_validate(data.get("amount"))
        captured = Money.model_validate((data.get("payment") or {}).get("captured"))
    except (ValidationError, AttributeError):
        return []
    return _amount_errors(amount, captured)


@dataclass(frozen=True)
class PaymentBalance:
    """What intake knows of one captured payment: captured and already accepted for refund."""

    currency: str
    captured: int
    refunded: int

    @property
    def refundable(self) -> int:
        return self.captured - self.refunded

    def reserved(self, value: int) -> "PaymentBalance":
        """The balance once `value` more is accepted for refund."""
        return replace(self, refunded=self.refunded + value)


def balance_errors(balance: PaymentBalance, request: RefundRequested) -> list[FieldError]:
    """Whether this payment can still cover the request (invariant 2: never over-refund)."""
    captured = request.payment.captured
    if captured.currency != balance.currency or captured.value != balance.captured:
        known = Money(value=balance.captured, currency=balance.currency)
        return [FieldError(field="payment.captured", code="captured_mismatch",
                           message=f"this payment was first seen with captured {known.format()}; "
                                   f"this request says {captured.format()}")]
    if request.amount.value > balance.refundable:
        remaining = Money(value=balance.refundable, currency=balance.currency)
        return [FieldError(field="amount.value", code="exceeds_refundable",
                           message=f"only {remaining.format()} of this payment is still refundable")]
    return []


# A payment as the balance ledger keys it: (gateway, payment id).
PaymentKey = tuple[str, str]


def payment_key(request: RefundRequested) -> PaymentKey:
    return request.payment.gateway, request.payment.id


@dataclass(frozen=True)
class Submission:
    """One refund request as it reached intake (off Kafka or over HTTP), not decided yet."""

    source: str | None
    request_id: str | None  # where it could be read
    event_type: str
    data: object
    received_at: datetime
    # Problems the way in found itself (HTTP: a body request_id that is not the Idempotency-Key).
    errors: tuple[FieldError, ...] = ()

    @property
    def refund_id(self) -> str | None:
        """The refund (source, request_id) is, when both can be read; None: no ticket, no dedupe."""
        return refund_id_for(self.source, self.request_id) if self.source and self.request_id else None

    @cached_property
    def body_hash(self) -> str:
        return request_hash(self.data)


@dataclass(frozen=True)
class Accepted:
    request: RefundRequested


@dataclass(frozen=True)
class Rejected:
    errors: list[FieldError]
    request: RefundRequested | None = None  # when the body itself was valid


@dataclass(frozen=True)
class Duplicate:
    """A request whose (source, request_id) was seen before: it gets that one's outcome again."""

    # Index in the batch of the first request with the key; None: decided before this batch.
    earlier: int | None
    # Its body differs from the first one's (the key was reused).
    reused_key: bool = False


Verdict = Accepted | Rejected | Duplicate
# A request screened but not settled: a verdict already, or a valid new request the balance decides.
Screened = Verdict | RefundRequested


def screen(submissions: Sequence[Submission], stored_hashes: Mapping[str, str | None]) -> list[Screened]:
    """Dedupe and validate a batch in consumption order. `stored_hashes`: refund_id -> body hash of the
    requests decided before (None for tickets older than hashes, taken as the same body). A key twice
    in the batch: the second is a duplicate of the first, as if the first had been decided alone."""
    first_index: dict[str, int] = {}
    screened: list[Screened] = []
    for index, submission in enumerate(submissions):
        refund_id = submission.refund_id
        if refund_id is not None and refund_id in stored_hashes:
            screened.append(Duplicate(None, stored_hashes[refund_id] not in (None, submission.body_hash)))
        elif refund_id is not None and refund_id in first_index:
            first = submissions[first_index[refund_id]]
            screened.append(Duplicate(first_index[refund_id], first.body_hash != submission.body_hash))
        else:
            if refund_id is not None:
                first_index[refund_id] = index
            screened.append(_checked(submission))
    return screened


def _checked(submission: Submission) -> Rejected | RefundRequested:
    checked = validate_request(submission.event_type, submission.data)
    if isinstance(checked, list):
        return Rejected([*submission.errors, *checked])
    if submission.errors:
        return Rejected(list(submission.errors), checked)
    return checked


def payments_to_lock(screened: Sequence[Screened]) -> dict[PaymentKey, Money]:
    """The payments the batch's valid new requests refund, each with the captured amount its first
    request gives (a payment seen for the first time is created with it)."""
    captured: dict[PaymentKey, Money] = {}
    for item in screened:
        if isinstance(item, RefundRequested):
            captured.setdefault(payment_key(item), item.payment.captured)
    return captured


def settle(screened: Sequence[Screened], balances: Mapping[PaymentKey, PaymentBalance]) -> list[Verdict]:
    """Each valid new request against its payment's balance, in consumption order: a request sees
    what the ones before it in the batch reserved (invariant 2)."""
    ledger = dict(balances)
    verdicts: list[Verdict] = []
    for item in screened:
        if not isinstance(item, RefundRequested):
            verdicts.append(item)
            continue
        balance = ledger[payment_key(item)]
        if problems := balance_errors(balance, item):
            verdicts.append(Rejected(problems, item))
        else:
            ledger[payment_key(item)] = balance.reserved(item.amount.value)
            verdicts.append(Accepted(item))
    return verdicts


def reservations(verdicts: Sequence[Verdict]) -> dict[PaymentKey, int]:
    """What the accepted requests add to each payment's refunded amount, in minor units."""
    added: dict[PaymentKey, int] = {}
    for verdict in verdicts:
        if isinstance(verdict, Accepted):
            key = payment_key(verdict.request)
            added[key] = added.get(key, 0) + verdict.request.amount.value
    return added


def onward_customer(customer: Customer, contact_sealed: str | None) -> Customer:
    """The customer as intake passes it on: id and locale in the clear, the contact only sealed for notify.
    Intake keeps no contact either: what it stores is this (in the accepted event) and a body hash."""
    return Customer(id=customer.id, locale=customer.locale, contact_sealed=contact_sealed)


def contact_of(customer: Customer) -> dict[str, str]:
    """How the customer can be reached, as given (empty: nobody to seal anything for)."""
    return {name: value for name, value in (("email", customer.email), ("phone", customer.phone)) if value}


def readable_ids(raw: object) -> tuple[str | None, str | None]:
    """(source, request_id) of a broken message, where they can be read."""
    if not isinstance(raw, dict):
        return None, None
    source = raw.get("source")
    data = raw.get("data")
    request_id = data.get("request_id") if isinstance(data, dict) else None
    return (source if isinstance(source, str) and source else None,
            request_id if isinstance(request_id, str) and 0 < len(request_id) <= 128 else None)


def request_hash(data: object) -> str:
    """SHA-256 of the canonical JSON of a request body (sorted keys, no spaces): equal bodies, equal hash."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def key_mismatch_errors(data: object, idempotency_key: str) -> list[FieldError]:
    """The HTTP body's request_id, when given, must be the Idempotency-Key."""
    body_id = data.get("request_id") if isinstance(data, dict) else None
    if body_id is None or body_id == idempotency_key:
        return []
    return [FieldError(field="request_id", code="invalid",
                       message="request_id in the body differs from the Idempotency-Key header")]


def has_drill_marker(request: RefundRequested) -> bool:
    """The request's metadata says `drill: "true"` (the scheduled end-to-end rehearsal's marker)."""
    return (request.metadata or {}).get("drill") == "true"


def is_drill(request: RefundRequested, source: str | None, drill_sources: frozenset[str]) -> bool:
    """A drill is a marked request from a source allowed to drill. Anyone else's marker is ignored, so
    a platform cannot take a real refund out of the customer messages and the SLO series."""
    return source in drill_sources and has_drill_marker(request)


DRILL_SOURCE = "refund-pipeline/drill"


@dataclass(frozen=True)
class DrillPayment:
    """The standing payment drills refund against: it exists at the gateway (a real gateway's test account,
    or the simulator's seeded one) with a captured amount large enough for every drill's 1.00 EUR."""

    gateway: str
    payment_id: str
    captured_value: int  # EUR minor units


def drill_request(n: str, now: datetime, payment: DrillPayment) -> RefundRequested:
    """A synthetic refund for the scheduled end-to-end drill, against the standing drill payment."""
    return RefundRequested.model_validate({
        "request_id": f"drill-{n}", "order_id": f"drill-ord-{n}",
        "payment": {"id": payment.payment_id, "gateway": payment.gateway, "channel": "card",
                    "captured": {"value": payment.captured_value, "currency": "EUR"},
                    # Within every refund window: a drill must not wait in review (unknown capture time does).
                    "captured_at": (now - timedelta(days=1)).isoformat()},
        "amount": {"value": 100, "currency": "EUR"},
        "customer": {"id": f"drill-cus-{n}", "locale": "en"},
        "region": "DE", "reason": "other", "note": "end-to-end drill, not a customer refund",
        "requested_at": now.isoformat(), "metadata": {"drill": "true"},
    })


def drill_due(now: datetime, off_peak_hours_utc: list[int]) -> bool:
    """Drills run in the off-peak hours given (UTC), or at any hour when none are given."""
    return not off_peak_hours_utc or now.hour in off_peak_hours_utc


@dataclass(frozen=True)
class ReservedTicket:
    """What reinstating a ticket's amount looks at: its amount, whether (and why) it was given back, and
    the payout attempt it was last reserved for."""

    amount: int
    released_as: str | None  # None: the amount is reserved now
    payout_attempt: int


def reinstatement(ticket: ReservedTicket | None, attempt: int, refundable: int) -> FieldError | None:
    """Whether payout attempt `attempt` (an exit out of failed attempt `attempt - 1`) may have the ticket's
    amount reserved again with `refundable` left on the payment: None if so (or it already is), else why not."""
    if ticket is None:
        return FieldError(field="refund_id", code="unknown_refund", message="intake accepted no such refund")
    if ticket.released_as is None and ticket.payout_attempt == attempt:
        return None  # reserved for this attempt already: the same answer again
    if ticket.released_as != "failed" or ticket.payout_attempt != attempt - 1:
        return FieldError(field="attempt", code="not_reinstatable",
                          message=f"attempt {attempt} does not follow a failed payout of this refund "
                                  f"(last attempt {ticket.payout_attempt}, {ticket.released_as or 'reserved'})")
    if refundable < ticket.amount:
        return FieldError(field="amount", code="exceeds_refundable",
                          message=f"the payment has {refundable} left to refund, the refund needs {ticket.amount}")
    return None
