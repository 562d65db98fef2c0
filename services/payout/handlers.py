"""Payout: record the intent when a refund is approved, execute it at the gateway after.

Consuming only writes the intent (and `payout-submitted`); the executor loop
claims due intents under a lease, calls the gateway with the refund's
idempotency key, and records the outcomes with `paid` or `payout-failed` in one
transaction, each only if its row is still this claim's (services/payout/store.py).

At most one successful payout per refund, whatever crashes: the intent is
committed before the gateway is called, the key is the refund's, and any
attempt after the first (a crash left the row `submitting`, or the last call
timed out or got a 5xx) first asks the gateway by key whether it already
holds a refund, and only calls `refund` again if it does not.
"""

import asyncio
import os
import random
import signal
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog
from prometheus_client import Counter

from services.payout import domain, store
from services.payout.gateway import Gateway, GatewayError, GatewayResult, RefundOrder
from shared.envelope import Outgoing, encode
from shared.events import PayoutFailed, PayoutSubmitted, RefundApproved, RefundPaid
from shared.metrics import observe_completion
from shared.money import Money, currency_exponent
from shared.periodic import every
from shared.stage import Inbound, Stage

SOURCE = "refund-pipeline/payout"
log = structlog.get_logger()
GATEWAY_ERRORS = Counter("refund_payout_gateway_errors_total", "Gateway calls that got no outcome",
                         ["gateway", "error", "retryable"])
ABANDONED = Counter("refund_payout_claims_abandoned_total",
                    "Claimed payouts this worker wrote nothing for, left to a later claim", ["reason"])


@dataclass(frozen=True)
class PayoutPolicy:
    """The knobs payout's settings give the handlers."""

    retry: domain.RetryPolicy = domain.RetryPolicy()
    confirm_poll_seconds: float = 2.0
    fallback_channel: str | None = None
    fallback_from: frozenset[str] = frozenset()
    settlement_currency: dict[str, str] | None = None  # platform source -> merchant settlement currency
    # Fault injection for the crash test: SIGKILL this process right after the
    # gateway answered for this payment id, before the outcome is committed.
    kill_after_gateway_for: str | None = None


def gateway_for(gateways: Mapping[str, Gateway], name: str) -> Gateway:
    """The adapter for a payment's gateway; payments on gateways without one go through the simulator."""
    return gateways.get(name) or gateways["sim"]


def _ref_fields(refund: RefundApproved) -> dict:
    return {name: getattr(refund, name) for name in
            ("refund_id", "request_id", "source", "order_id", "amount", "channel", "region", "drill")}


class IntentRecorder:
    """The stage's decision: one intent row per approved refund, with its ETA and FX."""

    def __init__(self, policy: PayoutPolicy) -> None:
        self.policy = policy

    async def __call__(self, conn: asyncpg.Connection, item: Inbound) -> list[Outgoing]:
        refund = RefundApproved.model_validate(item.event.get_data())
        payout_id = "po_" + refund.refund_id.removeprefix("rf_")
        now = datetime.now(UTC)
        eta = domain.funds_eta(now, refund.channel.value, refund.region)
        fx = await self._settlement_amount(conn, refund)
        inserted = await conn.execute(
            "INSERT INTO payout.payouts (refund_id, payout_id, idempotency_key, status, gateway, payment_id, "
            "amount_value, currency, channel, refund, approved_at, eta, settlement_value, settlement_currency, "
            "fx_rate, fx_source) VALUES ($1, $2, $1, 'pending', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) "
            "ON CONFLICT (refund_id) DO NOTHING",
            refund.refund_id, payout_id, refund.payment.gateway, refund.payment.id, refund.amount.value,
            refund.amount.currency, refund.channel.value, refund.model_dump(mode="json"), refund.approved_at,
            eta, *fx)
        if inserted.endswith("0"):
            return []
        submitted = PayoutSubmitted(**_ref_fields(refund), gateway=refund.payment.gateway, payout_id=payout_id,
                                    submitted_at=now, eta=eta)
        return [encode(submitted, source=SOURCE, key=refund.refund_id)]

    async def _settlement_amount(self, conn: asyncpg.Connection, refund: RefundApproved) -> tuple:
        """(value, currency, rate, source) in the merchant's settlement currency, or Nones if it is the same."""
        target = (self.policy.settlement_currency or {}).get(refund.source)
        if not target or target == refund.amount.currency:
            return None, None, None, None
        rate = await conn.fetchrow(
            "SELECT rate, source, as_of FROM payout.fx_rates WHERE base = $1 AND quote = $2 "
            "ORDER BY as_of DESC LIMIT 1", refund.amount.currency, target)
        if rate is None:
            # Paying the customer does not wait on treasury data; finance sees the gap.
            log.warning("fx_rate_missing", refund_id=refund.refund_id, base=refund.amount.currency, quote=target)
            return None, target, None, None
        value = domain.convert(refund.amount.value, currency_exponent(refund.amount.currency),
                               currency_exponent(target), rate["rate"])
        return value, target, rate["rate"], f"{rate['source']}@{rate['as_of'].isoformat()}"


@dataclass(frozen=True)
class Attempt:
    """What one claim of a payout came to."""

    result: GatewayResult | None = None
    error: GatewayError | None = None
    recovered_by_lookup: bool = False


def _order(row: asyncpg.Record) -> RefundOrder:
    settles_as = (row["settlement_value"], row["settlement_currency"]) if row["settlement_value"] else None
    return RefundOrder(row["idempotency_key"], row["payment_id"], row["amount_value"], row["currency"],
                       row["channel"], settles_as)


def _settlement_amount(row: asyncpg.Record) -> Money | None:
    if row["settlement_value"] is None:
        return None
    return Money(value=row["settlement_value"], currency=row["settlement_currency"])


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: its row's new state and, for a finished payout, the event announcing it."""

    write: store.PayoutWrite
    event: Outgoing | None = None
    drill: bool = False


def _answered(refund_id: str, call: asyncio.Task) -> bool:
    """Whether the call came back with an attempt (not cancelled with its claim, not broken)."""
    if call.cancelled():
        return False
    if call.exception() is not None:
        log.error("payout_attempt_broke", refund_id=refund_id, exc_info=call.exception())
        ABANDONED.labels("attempt_error").inc()
        return False
    return True


class PayoutExecutor:
    """Claims due intents, calls the gateway for each, and writes what each came to while the claim holds.

    The lease (`lease_seconds`): a claim holds its rows that long from its last
    renewal, and is renewed every third of it while their gateway calls run, so a
    slow gateway never makes a live worker's rows look orphaned, while a dead
    worker's rows are free again one lease after its last renewal. A claim takes
    no more rows than this worker calls at once, so no row waits in memory for a
    free call. A row the renewal finds lost (the worker stalled past its lease and
    another claimed it) has its call cancelled and writes nothing; and the write
    itself only touches rows the claim still holds, so a lost row that finished
    anyway is dropped, counted and logged, never applied.
    """

    def __init__(self, stage: Stage, gateways: Mapping[str, Gateway], *, reclaim_after_seconds: float,
                 sla_seconds: float, policy: PayoutPolicy = PayoutPolicy(), concurrency: int = 32) -> None:
        self.stage = stage
        self.gateways = gateways
        self.lease_seconds = reclaim_after_seconds
        self.sla_seconds = sla_seconds
        self.policy = policy
        self.claim_size = concurrency

    async def run_forever(self) -> None:
        while True:
            try:
                if not await self.run_once():
                    self.stage.committed.clear()
                    try:
                        await asyncio.wait_for(self.stage.committed.wait(), timeout=1.0)
                    except TimeoutError:
                        pass
            except Exception:
                log.exception("payout_executor_failed")
                await asyncio.sleep(1.0)

    async def run_once(self) -> int:
        claim = await store.claim_due(self.stage.pool, self.claim_size, self.lease_seconds)
        if not claim.rows:
            return 0
        outcomes = self._outcomes(claim.rows, await self._attempts_under_lease(claim))
        written = await self._save(claim, outcomes)
        for row in claim.rows:
            if row["refund_id"] in written:
                self._observe(row, outcomes[row["refund_id"]])
            elif row["refund_id"] in outcomes:
                log.warning("payout_outcome_dropped_claim_lost", refund_id=row["refund_id"],
                            status=outcomes[row["refund_id"]].write.status)
                ABANDONED.labels("stale_write").inc()
        return len(claim.rows)

    def _outcomes(self, rows: list[asyncpg.Record], attempts: dict[str, Attempt]) -> dict[str, Outcome]:
        outcomes = {}
        for row in rows:
            if (attempt := attempts.get(row["refund_id"])) is None:
                continue
            try:
                outcomes[row["refund_id"]] = self._outcome(row, attempt)
            except Exception:
                # Left to its lease: the next claim asks the gateway by key again. One row's bug is not the batch's.
                log.exception("payout_outcome_unrecordable", refund_id=row["refund_id"])
                ABANDONED.labels("unrecordable").inc()
        return outcomes

    async def _save(self, claim: store.Claim, outcomes: dict[str, Outcome]) -> set[str]:
        """Write the outcomes the claim still holds, with their events; return the refunds written."""
        async with self.stage.pool.acquire() as conn, conn.transaction():
            written = await store.write_outcomes(conn, claim, [outcome.write for outcome in outcomes.values()])
            pending = await self.stage.publish(
                conn, [outcome.event for r, outcome in outcomes.items() if r in written and outcome.event])
        await self.stage.flush(pending)
        return written

    async def _attempts_under_lease(self, claim: store.Claim) -> dict[str, Attempt]:
        """Each row's attempt, renewing the claim while calls run; rows it lost, or whose call broke, are left out."""
        calls = {row["refund_id"]: asyncio.create_task(self._attempt(row)) for row in claim.rows}
        try:
            await self._renew_while_running(claim, calls)
        finally:  # nothing outlives the claim, whatever stopped it (a failed renewal, shutdown)
            for call in calls.values():
                call.cancel()
            await asyncio.gather(*calls.values(), return_exceptions=True)
        return {refund_id: call.result() for refund_id, call in calls.items() if _answered(refund_id, call)}

    async def _renew_while_running(self, claim: store.Claim, calls: dict[str, asyncio.Task]) -> None:
        running = set(calls.values())
        while running:
            _, running = await asyncio.wait(running, timeout=claim.lease_seconds / 3)
            if running:
                held = await store.renew(self.stage.pool, claim)
                for refund_id in calls.keys() - held:
                    if calls[refund_id].cancel():
                        log.warning("payout_claim_lost_call_cancelled", refund_id=refund_id)
                        ABANDONED.labels("claim_lost").inc()

    async def _attempt(self, row: asyncpg.Record) -> Attempt:
        gateway = gateway_for(self.gateways, row["gateway"])
        try:
            known = await gateway.lookup(row["idempotency_key"], row["payment_id"]) if row["attempts"] > 1 else None
            if known:
                # An earlier attempt reached the gateway (crash, timeout): its answer stands.
                log.info("payout_recovered_by_lookup", refund_id=row["refund_id"], status=known.status)
                if known.status == "reversed":
                    # It was paid, then came back: record the payment; the reversal watcher follows.
                    known = GatewayResult("succeeded", known.gateway_ref, None)
                return Attempt(result=known, recovered_by_lookup=True)
            result = await gateway.refund(_order(row))
        except GatewayError as error:
            GATEWAY_ERRORS.labels(row["gateway"], error.reason, str(error.retryable).lower()).inc()
            return Attempt(error=error)
        if self.policy.kill_after_gateway_for and row["payment_id"] == self.policy.kill_after_gateway_for:
            log.warning("fault_injected_kill_after_gateway", refund_id=row["refund_id"])
            os.kill(os.getpid(), signal.SIGKILL)
        return Attempt(result=result)

    def _outcome(self, row: asyncpg.Record, attempt: Attempt) -> Outcome:
        result, error = attempt.result, attempt.error
        held = replace(store.PayoutWrite.unchanged(row),
                       recovered_by_lookup=row["recovered_by_lookup"] or attempt.recovered_by_lookup)
        failed_attempts = row["error_attempts"] + 1
        if error is not None and (not error.retryable or self.policy.retry.exhausted(failed_attempts)):
            reason = error.reason if not error.retryable else f"retries_exhausted:{error.reason}"
            return self._finished(row, held, GatewayResult("failed", None, reason))
        if error is not None:
            delay = self.policy.retry.delay(failed_attempts, random.random())
            log.info("payout_retry_scheduled", refund_id=row["refund_id"], error=error.reason, in_seconds=delay)
            return Outcome(replace(held, status="pending", retry_in_seconds=delay, last_error=error.reason,
                                   error_attempts=failed_attempts))
        if result.status == "pending":
            return Outcome(replace(held, status="confirming", retry_in_seconds=self.policy.confirm_poll_seconds))
        if result.status == "failed" and (rerouted := self._rerouted(row, held, result.failure_reason or "unknown")):
            return Outcome(rerouted)
        return self._finished(row, held, result)

    def _rerouted(self, row: asyncpg.Record, held: store.PayoutWrite, reason: str) -> store.PayoutWrite | None:
        allowed = self.policy.fallback_channel if row["channel"] in self.policy.fallback_from else None
        channel = domain.reroute(row["channel"], reason, allowed)
        if channel is None or row["routed_from"]:
            return None
        log.info("payout_rerouted", refund_id=row["refund_id"], channel=channel, after=reason)
        # A new key: the failed card refund stays failed at the gateway; this is a new payout.
        return replace(held, status="pending", channel=channel, routed_from=row["channel"], attempts=0,
                       error_attempts=0, idempotency_key=f"{row['refund_id']}:{channel}", last_error=reason,
                       retry_in_seconds=0.0)

    def _finished(self, row: asyncpg.Record, held: store.PayoutWrite, result: GatewayResult) -> Outcome:
        now = datetime.now(UTC)
        refund = RefundApproved.model_validate(row["refund"])
        eta = domain.funds_eta(now, row["channel"], refund.region) if result.succeeded else None
        write = replace(held, status="succeeded" if result.succeeded else "failed", gateway_ref=result.gateway_ref,
                        failure_reason=result.failure_reason, finished_at=now, eta=eta)
        common = dict(_ref_fields(refund), gateway=row["gateway"], payout_id=row["payout_id"])
        if result.succeeded:
            payload = RefundPaid(**common, gateway_ref=result.gateway_ref, paid_at=now, eta=eta,
                                 settlement_amount=_settlement_amount(row))
        else:
            log.info("payout_failed", refund_id=row["refund_id"], reason=result.failure_reason)
            payload = PayoutFailed(**common, failure_reason=result.failure_reason or "unknown",
                                   reason_codes=[result.failure_reason or "unknown"], failed_at=now)
        return Outcome(write, encode(payload, source=SOURCE, key=row["refund_id"]), drill=refund.drill)

    def _observe(self, row: asyncpg.Record, outcome: Outcome) -> None:
        if outcome.event is None:  # still open
            return
        took = (outcome.write.finished_at - row["approved_at"]).total_seconds()
        observe_completion("payout", outcome.write.status, outcome.write.channel, took,
                           overdue=took > self.sla_seconds, drill=outcome.drill)


class ReversalWatcher:
    """Asks the gateway about recently paid refunds; a reversal fails the payout and says why."""

    def __init__(self, stage: Stage, gateways: Mapping[str, Gateway], *, window: timedelta,
                 interval_seconds: float) -> None:
        self.stage = stage
        self.gateways = gateways
        self.window = window
        self.interval_seconds = interval_seconds

    async def run_forever(self) -> None:
        await every(self.interval_seconds, self.run_once, name="payout_reversal_watch")

    async def run_once(self) -> int:
        paid = await self.stage.pool.fetch(
            "SELECT gateway, array_agg(gateway_ref) AS refs FROM payout.payouts WHERE status = 'succeeded' "
            "AND finished_at > now() - $1::interval GROUP BY gateway", self.window)
        reversed_: dict[str, str] = {}
        for group in paid:
            reversed_ |= await gateway_for(self.gateways, group["gateway"]).reversals(group["refs"])
        if not reversed_:
            return 0
        async with self.stage.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE payout.payouts SET status = 'reversed', reversed_at = now() "
                "WHERE status = 'succeeded' AND gateway_ref = ANY($1) RETURNING *", list(reversed_))
            outgoing = [self._reversed(row, reversed_[row["gateway_ref"]]) for row in rows]
            pending = await self.stage.publish(conn, outgoing)
        await self.stage.flush(pending)
        return len(rows)

    def _reversed(self, row: asyncpg.Record, reason: str) -> Outgoing:
        log.warning("payout_reversed", refund_id=row["refund_id"], reason=reason)
        refund = RefundApproved.model_validate(row["refund"])
        payload = PayoutFailed(**_ref_fields(refund), gateway=row["gateway"], payout_id=row["payout_id"],
                               failure_reason=f"reversed_after_success:{reason}",
                               reason_codes=["reversed", reason], failed_at=datetime.now(UTC))
        return encode(payload, source=SOURCE, key=row["refund_id"])
