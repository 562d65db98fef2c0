"""What a gateway's answer, or its webhook, makes of a payout: the row's new state and the events announcing it.

The executor (an answer to its own call) and the webhook receiver (an outcome the
gateway reported later) build their writes here, so a payout is paid, failed,
re-routed or reversed the same way whichever told payout first.
"""

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import asyncpg
import structlog

from services.payout import domain, store
from services.payout.gateway import GatewayEvent, GatewayResult
from shared.contract.envelope import Outgoing, encode
from shared.contract.events import PayoutFailed, RefundApproved, RefundPaid
from shared.contract.lifecycle import REVERSAL_REASON
from shared.runtime.metrics import observe_completion
from shared.contract.money import Money

SOURCE = "refund-pipeline/payout"
log = structlog.get_logger()


@dataclass(frozen=True)
class PayoutPolicy:
    """The knobs payout's settings give the handlers."""

    retry: domain.RetryPolicy = domain.RetryPolicy()
    # How long a payout the gateway answered `pending` waits for the outcome's webhook before
    # payout asks the gateway itself (gateways that can be asked; see Gateway.looks_up).
    webhook_grace_seconds: float = 60.0
    fallback_channel: str | None = None
    fallback_from: frozenset[str] = frozenset()
    settlement_currency: dict[str, str] | None = None  # platform source -> merchant settlement currency
    # Fault injection for the crash test: SIGKILL this process right after the
    # gateway answered for this payment id, before the outcome is committed.
    kill_after_gateway_for: str | None = None
    # Opens a customer's new destination (DESTINATION_PRIVATE_KEY) when an exit pays one.
    destination_key: object | None = None


@dataclass(frozen=True)
class Outcome:
    """A payout's new state and the events announcing it (none while it is still open)."""

    write: store.PayoutWrite
    events: tuple[Outgoing, ...] = ()
    completed: bool = False  # the payout left the stage (paid or failed): observed once, here
    drill: bool = False


def ref_fields(refund: RefundApproved) -> dict:
    return {name: getattr(refund, name) for name in
            ("refund_id", "request_id", "source", "order_id", "amount", "channel", "region", "drill")}


def _settlement_amount(row: asyncpg.Record) -> Money | None:
    if row["settlement_value"] is None:
        return None
    return Money(value=row["settlement_value"], currency=row["settlement_currency"])


def observe(row: asyncpg.Record, outcome: Outcome, sla_seconds: float) -> None:
    if not outcome.completed:
        return
    # A re-driven attempt (an exit out of a failed payout) entered the stage again when it was created.
    entered = row["approved_at"] if row["attempt"] == 1 else row["created_at"]
    took = (outcome.write.finished_at - entered).total_seconds()
    observe_completion("payout", outcome.write.status, outcome.write.channel, took,
                       overdue=took > sla_seconds, drill=outcome.drill)


class OutcomeRules:
    """Builds outcomes from a row (what never changes: the refund, its gateway) and its current state."""

    def __init__(self, policy: PayoutPolicy) -> None:
        self.policy = policy

    def failed_or_rerouted(self, row: asyncpg.Record, held: store.PayoutWrite, result: GatewayResult) -> Outcome:
        if rerouted := self._rerouted(row, held, result.failure_reason or "unknown"):
            return Outcome(rerouted)
        return self.finished(row, held, result)

    def _rerouted(self, row: asyncpg.Record, held: store.PayoutWrite, reason: str) -> store.PayoutWrite | None:
        allowed = self.policy.fallback_channel if held.channel in self.policy.fallback_from else None
        channel = domain.reroute(held.channel, reason, allowed)
        if channel is None or held.routed_from:
            return None
        log.info("payout_rerouted", refund_id=row["refund_id"], channel=channel, after=reason)
        # A new key: the failed card refund stays failed at the gateway; this is a new payout. Derived from
        # the attempt's own key (the refund's for attempt 1), so a later attempt never reuses an earlier one's.
        return replace(held, status="pending", channel=channel, routed_from=held.channel, attempts=0,
                       error_attempts=0, idempotency_key=f"{held.idempotency_key}:{channel}", last_error=reason,
                       gateway_ref=None, retry_in_seconds=0.0)

    def finished(self, row: asyncpg.Record, held: store.PayoutWrite, result: GatewayResult) -> Outcome:
        now = datetime.now(UTC)
        refund = RefundApproved.model_validate(row["refund"])
        eta = domain.funds_eta(now, held.channel, refund.region) if result.succeeded else None
        write = replace(held, status="succeeded" if result.succeeded else "failed",
                        gateway_ref=result.gateway_ref or held.gateway_ref, failure_reason=result.failure_reason,
                        finished_at=now, eta=eta)
        common = dict(ref_fields(refund), gateway=row["gateway"], payout_id=row["payout_id"], attempt=row["attempt"])
        if result.succeeded:
            payload = RefundPaid(**common, gateway_ref=write.gateway_ref, paid_at=now, eta=eta,
                                 settlement_amount=_settlement_amount(row))
        else:
            log.info("payout_failed", refund_id=row["refund_id"], reason=result.failure_reason)
            payload = PayoutFailed(**common, failure_reason=result.failure_reason or "unknown",
                                   reason_codes=[result.failure_reason or "unknown"], failed_at=now)
        return Outcome(write, (encode(payload, source=SOURCE, key=row["refund_id"]),), completed=True,
                       drill=refund.drill)

    def reversed(self, row: asyncpg.Record, held: store.PayoutWrite, reason: str) -> Outcome:
        """A paid refund whose money the gateway returned: `payout-failed` saying so (notify shows `reversed`)."""
        log.warning("payout_reversed", refund_id=row["refund_id"], reason=reason)
        now = datetime.now(UTC)
        refund = RefundApproved.model_validate(row["refund"])
        payload = PayoutFailed(**ref_fields(refund), gateway=row["gateway"], payout_id=row["payout_id"],
                               failure_reason=f"{REVERSAL_REASON}:{reason}", reason_codes=["reversed", reason],
                               failed_at=now, attempt=row["attempt"])
        return Outcome(replace(held, status="reversed", reversed_at=now),
                       (encode(payload, source=SOURCE, key=row["refund_id"]),), drill=refund.drill)

    def after_event(self, row: asyncpg.Record, held: store.PayoutWrite, event: GatewayEvent) -> Outcome | None:
        """What a webhook's outcome makes of a payout that no claim holds, in state `held`; None: nothing."""
        if event.refund_key != held.idempotency_key:
            return None  # about a payout this one replaced (a card refund that failed before a re-route)
        change = domain.after_gateway_event(held.status, event.status)
        reason = event.failure_reason or "unknown"
        if change == "paid":
            return self.finished(row, held, GatewayResult("succeeded", event.gateway_ref, None))
        if change == "failed":
            return self.failed_or_rerouted(row, held, GatewayResult("failed", event.gateway_ref, reason))
        if change == "reversed":
            return self.reversed(row, held, reason)
        if change == "paid_then_reversed":
            paid = self.finished(row, held, GatewayResult("succeeded", event.gateway_ref, None))
            back = self.reversed(row, paid.write, reason)
            return replace(back, events=paid.events + back.events, completed=True)
        return None
