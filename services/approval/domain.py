"""Approval decisions. Pure: no I/O.

Risk first (a hold stops everything else), then the policy's rules: every rule
whose conditions hold fires, and the strictest action wins. A review is decided
by people: enough distinct approvers with a permitted role approve, or one denies.
Whatever approves a refund, its payment is compared with what its gateway holds
first (`check_payment`); a disagreement holds it as `payment-mismatch`.
"""

import statistics
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from services.approval.policy import Condition, Policy
from shared.contract.events import RefundAccepted
from services.approval.countries import currencies_of_country
from shared.contract.money import Money, major_units_text
from shared.runtime.roles import Role

_STRICTNESS = {"approve": 0, "review": 1, "deny": 2}
# Suffix of a refund-window rule's reason code when the payment's capture time is unknown.
CAPTURED_AT_UNKNOWN = "captured_at_unknown"


@dataclass(frozen=True)
class CustomerHistory:
    """What approval has seen of this customer before this refund."""

    refunds_in_velocity_window: int = 0
    past_amounts: tuple[int, ...] = ()  # minor units, same currency as the refund


# A customer's latest refunds the risk rules look at (the velocity count and the amount median).
HISTORY_DEPTH = 200


@dataclass(frozen=True)
class PastRefund:
    """A refund approval has recorded for a customer."""

    refund_id: str
    currency: str
    amount_value: int
    accepted_at: datetime


def customer_key(refund: RefundAccepted) -> str:
    """Whose history a refund belongs to: customer ids are per platform."""
    return f"{refund.source}/{refund.customer.id}"


def first_sightings(refund_ids: Sequence[str], decided: Set[str]) -> list[int]:
    """Positions of the refunds to decide: not decided before, and each refund once (its first event)."""
    taken = set(decided)
    positions = []
    for n, refund_id in enumerate(refund_ids):
        if refund_id not in taken:
            taken.add(refund_id)
            positions.append(n)
    return positions


def customer_histories(refunds: Sequence[RefundAccepted], velocity_since: Sequence[datetime | None],
                       recorded: Mapping[str, Sequence[PastRefund]],
                       already_recorded: Set[str]) -> list[CustomerHistory]:
    """Each refund's history as if the batch were decided one refund after another, in its order.

    `recorded`: each customer's latest HISTORY_DEPTH + 1 refunds recorded before the batch (by
    customer_key; one more than a history holds, as a refund never counts in its own);
    `already_recorded`: the batch's refund ids recorded before, whose row stands. Every other refund of
    the batch is recorded as it is decided, so it counts in the history of the customer's later refunds
    in the batch. `velocity_since[n]`: the start of refund n's velocity window (None: no velocity rule).
    """
    latest = {key: _newest_first(rows) for key, rows in recorded.items()}
    histories = []
    for refund, since in zip(refunds, velocity_since, strict=True):
        rows = latest.setdefault(customer_key(refund), [])
        histories.append(history_of(refund, rows, since))
        if refund.refund_id not in already_recorded:
            rows.append(PastRefund(refund.refund_id, refund.amount.currency, refund.amount.value, refund.accepted_at))
            # Older ones are never among a later refund's latest HISTORY_DEPTH.
            rows[:] = _newest_first(rows)[:HISTORY_DEPTH + 1]
    return histories


def history_of(refund: RefundAccepted, recorded: Iterable[PastRefund],
               velocity_since: datetime | None) -> CustomerHistory:
    """The customer's latest HISTORY_DEPTH recorded refunds other than this one: how many were accepted
    after `velocity_since` (whenever that is: a later-accepted refund counts too), and the amounts of
    those in the refund's currency."""
    latest = _newest_first(row for row in recorded if row.refund_id != refund.refund_id)[:HISTORY_DEPTH]
    recent = 0 if velocity_since is None else sum(row.accepted_at > velocity_since for row in latest)
    amounts = tuple(row.amount_value for row in latest if row.currency == refund.amount.currency)
    return CustomerHistory(recent, amounts)


def _newest_first(rows: Iterable[PastRefund]) -> list[PastRefund]:
    return sorted(rows, key=lambda row: (row.accepted_at, row.refund_id), reverse=True)


@dataclass(frozen=True)
class Verdict:
    action: Literal["approve", "review", "deny", "hold"]
    rule_ids: tuple[str, ...]
    approvals: int = 0  # distinct approvers a review needs
    roles: tuple[Role, ...] = ()  # who may decide a review or release a hold


def decide(policy: Policy, refund: RefundAccepted, history: CustomerHistory, dispute_open: bool) -> Verdict:
    """The first decision on an accepted refund."""
    if risks := risk_codes(policy, refund, history, dispute_open):
        return Verdict("hold", risks, roles=tuple(policy.risk.release_roles))
    return apply_rules(policy, refund)


def risk_codes(policy: Policy, refund: RefundAccepted, history: CustomerHistory,
               dispute_open: bool) -> tuple[str, ...]:
    risk, codes = policy.risk, []
    if refund.reason in risk.hold_reasons:
        codes.append(f"risk-reason-{refund.reason.value}")
    if dispute_open and risk.hold_open_disputes:
        codes.append("risk-open-dispute")
    if risk.velocity and history.refunds_in_velocity_window >= risk.velocity.max_refunds:
        codes.append("risk-velocity")
    if risk.history and len(history.past_amounts) >= risk.history.min_refunds:
        if refund.amount.value > risk.history.max_multiple_of_median * statistics.median(history.past_amounts):
            codes.append("risk-amount-unusual-for-customer")
    return tuple(codes)


def apply_rules(policy: Policy, refund: RefundAccepted) -> Verdict:
    """The policy's verdict without risk rules (also used when a hold is released)."""
    fired = firings(policy, refund)
    if not fired:
        return _verdict(policy.default_action, ("default",), 1, tuple(Role))
    action = max((firing.action for firing in fired), key=_STRICTNESS.__getitem__)
    reviews = [firing for firing in fired if firing.action == "review"]
    strictest = max(reviews, key=lambda firing: firing.approvals) if reviews else None
    return _verdict(action, tuple(firing.code for firing in fired),
                    strictest.approvals if strictest else 0, strictest.roles if strictest else ())


@dataclass(frozen=True)
class Firing:
    """A rule that fired, as it bears on the verdict."""

    code: str  # the rule id, or `<rule id>:captured_at_unknown`
    action: str
    approvals: int
    roles: tuple[Role, ...]


def firings(policy: Policy, refund: RefundAccepted) -> list[Firing]:
    """Every rule whose `when` holds, in policy order.

    A refund-window rule (`days_since_capture_over`) whose other conditions hold but whose window
    cannot be checked, because the payment's capture time is unknown, fires as a review by the
    rule's own reviewers: not its approve (the window may have passed), not its deny (it may not have).
    """
    fired = []
    for rule in policy.rules:
        if matches(rule.when, refund):
            fired.append(Firing(rule.id, rule.action, rule.approvals, tuple(rule.roles)))
        elif window_unknown(rule.when, refund):
            fired.append(Firing(f"{rule.id}:{CAPTURED_AT_UNKNOWN}", "review", rule.approvals, tuple(rule.roles)))
    return fired


def _verdict(action: str, rule_ids: tuple[str, ...], approvals: int, roles: tuple[Role, ...]) -> Verdict:
    if action != "review":
        return Verdict(action, rule_ids)
    return Verdict("review", rule_ids, approvals, roles)


def matches(when: Condition, refund: RefundAccepted) -> bool:
    amount, currency = refund.amount.value, refund.amount.currency
    checks = (
        when.channel is None or refund.channel in when.channel,
        when.reason is None or refund.reason in when.reason,
        when.region is None or refund.region in when.region,
        when.region_not is None or refund.region not in when.region_not,
        when.source is None or refund.source in when.source,
        when.scope is None or when.scope == scope_of(refund),
        when.cross_currency is None or when.cross_currency == is_cross_currency(refund),
        when.amount_over is None or (currency in when.amount_over and amount > when.amount_over[currency]),
        when.amount_up_to is None or (currency in when.amount_up_to and amount <= when.amount_up_to[currency]),
        when.days_since_capture_over is None or _older_than(refund, when.days_since_capture_over),
    )
    return all(checks)


def window_unknown(when: Condition, refund: RefundAccepted) -> bool:
    """The rule's refund window is all that is left to check, and it cannot be: no capture time."""
    return (when.days_since_capture_over is not None and refund.payment.captured_at is None
            and matches(when.model_copy(update={"days_since_capture_over": None}), refund))


def scope_of(refund: RefundAccepted) -> str:
    return "full" if refund.amount.value == refund.payment.captured.value else "partial"


def is_cross_currency(refund: RefundAccepted) -> bool:
    legal = currencies_of_country(refund.region)
    return bool(legal) and refund.amount.currency not in legal


def _older_than(refund: RefundAccepted, days: int) -> bool:
    captured_at = refund.payment.captured_at  # unknown: `window_unknown` decides, never this
    return captured_at is not None and (refund.requested_at - captured_at).days > days


# ---------------------------------------------------------------- manual review

class ReviewRefused(Exception):
    """A reviewer's decision that must not be applied; `code` is stable for API clients."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass(frozen=True)
class OpenReview:
    kind: Literal["review", "hold"]
    state: str
    required_approvals: int
    roles: tuple[str, ...]
    approvers: tuple[str, ...]  # users who already approved this review


# Who may put an expired (parked) review or hold back in the queue.
REOPEN_ROLES = (Role.SENIOR_REVIEWER,)
WAITING_STATES = ("open", "expired")  # still in the approval stage: the refund is pending_review/on_hold


def check_decision(review: OpenReview, action: str, user_id: str, user_roles: frozenset[str]) -> str:
    """What a reviewer's action does: 'approve', 'deny', 'release' or 'approval_recorded'.

    An expired (parked) review is not decided as it stands: a senior reviewer reopens it first, with a
    reason and new deadlines, and then the usual roles and four eyes apply."""
    if review.state == "expired":
        raise ReviewRefused(409, "expired", f"this {review.kind} expired unanswered; a senior reviewer must "
                                            f"reopen it (POST /v1/reviews/{{refund_id}}/reopen) before it is decided")
    if review.state != "open":
        raise ReviewRefused(409, "already_decided", f"this {review.kind} is already {review.state}")
    if not user_roles.intersection(review.roles):
        raise ReviewRefused(403, "role_not_permitted",
                            f"deciding this {review.kind} needs one of the roles: {', '.join(review.roles)}")
    allowed = {"hold": ("release", "deny"), "review": ("approve", "deny")}[review.kind]
    if action not in allowed:
        raise ReviewRefused(422, "action_not_allowed",
                            f"a {review.kind} can only be decided with: {', '.join(allowed)}")
    if action != "approve":
        return action
    if user_id in review.approvers:
        raise ReviewRefused(403, "four_eyes",
                            f"{user_id} already approved; a second, different approver is required")
    return "approve" if len(review.approvers) + 1 >= review.required_approvals else "approval_recorded"


def check_reopen(review: OpenReview, user_roles: frozenset[str]) -> None:
    """A reopen is allowed only to REOPEN_ROLES, and only on an expired (parked) review or hold."""
    if not user_roles.intersection(REOPEN_ROLES):
        raise ReviewRefused(403, "role_not_permitted",
                            f"reopening an expired {review.kind} needs the role: "
                            f"{', '.join(str(role) for role in REOPEN_ROLES)}")
    if review.state != "expired":
        raise ReviewRefused(409, "not_expired", f"only an expired {review.kind} can be reopened; "
                                                f"this one is {review.state}")


def waiting_for_second_approver(review: OpenReview) -> bool:
    """Four eyes with one approval in: the next approver must be someone else."""
    return review.state in WAITING_STATES and review.required_approvals == 2 and len(review.approvers) == 1


def allowed_roles(review: OpenReview) -> tuple[str, ...]:
    """Who may decide it now: its roles while open; nobody once expired (reopen first) or decided."""
    return review.roles if review.state == "open" else ()


def can_reopen_roles(review: OpenReview) -> tuple[str, ...]:
    return tuple(str(role) for role in REOPEN_ROLES) if review.state == "expired" else ()


# ---------------------------------------------------------------- payment verification

PAYMENT_MISMATCH = "payment-mismatch"
# Reason code of an approval whose payment still disagreed in the ways a person released.
PAYMENT_MISMATCH_RELEASED = "payment-mismatch-released"


@dataclass(frozen=True)
class GatewayPayment:
    """A payment as its gateway holds it, in minor units of the gateway's `currency`."""

    currency: str
    captured: int
    refunded: int  # pending and succeeded refunds, by anyone


@dataclass(frozen=True)
class PaymentCheck:
    """What comparing a refund with its payment at the gateway found."""

    mismatch: tuple[str, ...] = ()  # `payment-mismatch` and one code per disagreement; () when they agree
    released: bool = False  # it disagrees only in ways a person already saw and released

    @property
    def approves(self) -> bool:
        return not self.mismatch or self.released


def payment_mismatch(refund: RefundAccepted, seen: GatewayPayment | None) -> tuple[str, ...]:
    """How the gateway's payment (`None`: the gateway does not know it) disagrees with the refund.

    A different currency; less captured than the request's `payment.captured`; less left at the
    gateway (captured - refunded) than the refund's amount. Each code names both values.
    """
    if seen is None:
        return _mismatch("payment not found at gateway")
    claimed = refund.payment.captured
    if seen.currency != claimed.currency:
        return _mismatch(f"currency {seen.currency} at gateway, {claimed.currency} claimed")
    found = []
    if seen.captured < claimed.value:
        found.append(f"captured {_text(seen.captured, claimed)} at gateway, {claimed.format()} claimed")
    left = max(seen.captured - seen.refunded, 0)
    if left < refund.amount.value:
        found.append(f"left {_text(left, claimed)} at gateway, {refund.amount.format()} asked")
    return _mismatch(*found)


def check_payment(refund: RefundAccepted, seen: GatewayPayment | None,
                  acknowledged: frozenset[str] = frozenset()) -> PaymentCheck:
    """Compare; `acknowledged`: the mismatch codes of a `payment-mismatch` hold a person released."""
    found = payment_mismatch(refund, seen)
    return PaymentCheck(found, released=bool(found) and set(found) <= acknowledged | {PAYMENT_MISMATCH})


def mismatch_codes(codes: tuple[str, ...] | list[str]) -> frozenset[str]:
    """The payment-mismatch codes among a hold's reason codes."""
    return frozenset(code for code in codes if code == PAYMENT_MISMATCH or code.startswith(PAYMENT_MISMATCH + ":"))


def counted_codes(codes: list[str]) -> list[str]:
    """Reason codes as metric labels: a mismatch's values (unbounded) are left out, its kind is kept."""
    return [code for code in codes if not code.startswith(PAYMENT_MISMATCH + ":")]


def recheck_delay(attempts: int, base_seconds: float, cap_seconds: float) -> float:
    """Seconds before asking an unanswering gateway again, after `attempts` unanswered asks."""
    return min(base_seconds * 2 ** max(attempts - 1, 0), cap_seconds)


def _mismatch(*found: str) -> tuple[str, ...]:
    return (PAYMENT_MISMATCH, *(f"{PAYMENT_MISMATCH}:{detail}" for detail in found)) if found else ()


def _text(value: int, like: Money) -> str:
    """A gateway's amount in the claimed currency, formatted like `Money.format` ('90.00 EUR')."""
    return f"{major_units_text(value, like.currency)} {like.currency}"
