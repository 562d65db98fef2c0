"""Payout: record the intent when a refund is approved, execute it at the gateway after.

Consuming only writes the intent (and `payout-submitted`), claimed under a lease for
this process's executor and handed to it in memory once committed (`HandOff`); the
executor also claims due intents (retries, exits, re-routes, a crashed worker's
rows once their lease ran out), calls the gateway with the refund's idempotency
key, and records the outcomes with `paid` or `payout-failed` in one transaction,
each only if its row is still this claim's (services/payout/store.py).
A refund the gateway answers `pending` is `confirming` until its outcome comes
by webhook (services/payout/webhooks.py); a gateway that can be asked is asked
only once the webhook is later than the grace period.

At most one successful payout per refund, whatever crashes: the intent is
committed before the gateway is called, the key is the refund's, and any
attempt after the first (a crash left the row `submitting`, or the last call
timed out or got a 5xx) first asks the gateway by key whether it already
holds a refund, and only calls `refund` again if it does not; a gateway that
cannot be asked gets the same request under the same key, which it answers by
replaying its first answer. A payment whose gateway has no route is never paid.

An exit out of a failed payout (services/payout/exits.py) makes the refund's next attempt on the same
row, under a new key (`<refund_id>:<attempt>`); the executor pays it like any other intent, and its
events carry the attempt.
"""

import asyncio
import collections
import os
import random
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import asyncpg
import structlog
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from prometheus_client import Counter

from services.payout import domain, store
from services.payout.gateway import Gateway, GatewayError, GatewayResult, RefundOrder
from services.payout.exits import DESTINATION_SEALED_FOR
from services.payout.outcomes import SOURCE, Outcome, OutcomeRules, PayoutPolicy, observe, ref_fields
from services.payout.webhooks import apply_waiting
from shared.runtime import tracing
from shared.contract import contact_seal
from shared.contract.envelope import Outgoing, encode
from shared.contract.events import PayoutSubmitted, RefundApproved
from shared.contract.money import currency_exponent
from shared.runtime.rounds import ClaimRounds
from shared.runtime.stage import Inbound, Stage

__all__ = ["SOURCE", "HandOff", "IntentRecorder", "PayoutExecutor", "PayoutPolicy"]
log = structlog.get_logger()
GATEWAY_ERRORS = Counter("refund_payout_gateway_errors_total", "Gateway calls that got no outcome",
                         ["gateway", "error", "retryable"])
ABANDONED = Counter("refund_payout_claims_abandoned_total",
                    "Claimed payouts this worker wrote nothing for, left to a later claim", ["reason"])
UNROUTED = Counter("refund_payout_unrouted_total",
                   "Payouts failed because their payment's gateway has no configured route", ["gateway"])
NOT_CONFIGURED = "gateway_not_configured"


class IntentRecorder:
    """The stage's decision for a batch of approved refunds: one intent row each, with its ETA and FX,
    recorded in one statement; `payout-submitted` for each intent recorded now (not for a redelivery)."""

    def __init__(self, policy: PayoutPolicy, hand_off: "HandOff | None" = None) -> None:
        self.policy = policy
        # Set: the intents are recorded claimed for this process and handed to its executor once the
        # transaction commits (no claim query per batch). Unset: recorded unclaimed, for any claim.
        self.hand_off = hand_off

    async def __call__(self, conn: asyncpg.Connection, items: list[Inbound]) -> list[Outgoing]:
        refunds: dict[str, RefundApproved] = {}
        for item in items:  # a refund approved twice in one batch: its first approval stands, as one at a time
            refunds.setdefault(item.data.refund_id, item.data)
        targets = {refund_id: target for refund_id, refund in refunds.items() if (target := domain.settlement_currency(
            self.policy.settlement_currency or {}, refund.source, refund.amount.currency))}
        rates = await store.latest_fx_rates(conn, {(refunds[r].amount.currency, t) for r, t in targets.items()})
        now = datetime.now(UTC)
        intents = [self._intent(refund, now, targets.get(refund.refund_id), rates) for refund in refunds.values()]
        if self.hand_off is None:
            recorded = await store.record_intents(conn, intents)
        else:
            claim = await store.record_intents_claimed(conn, intents, self.hand_off.lease_seconds)
            self.hand_off.taking(claim)
            recorded = set(claim.refund_ids)
        return [encode(PayoutSubmitted(**ref_fields(refund), gateway=intent.gateway, payout_id=intent.payout_id,
                                       submitted_at=now, eta=intent.eta), source=SOURCE, key=intent.refund_id)
                for refund, intent in zip(refunds.values(), intents, strict=True) if intent.refund_id in recorded]

    @staticmethod
    def _intent(refund: RefundApproved, now: datetime, target: str | None,
                rates: Mapping[tuple[str, str], domain.FxQuote]) -> store.Intent:
        return store.Intent(
            refund.refund_id, "po_" + refund.refund_id.removeprefix("rf_"), refund.payment.gateway, refund.payment.id,
            refund.amount.value, refund.amount.currency, refund.channel.value, refund.model_dump(mode="json"),
            refund.approved_at, domain.funds_eta(now, refund.channel.value, refund.region),
            *_settlement_amount(refund, target, rates), tracing.traceparent_for(refund.refund_id))


def _settlement_amount(refund: RefundApproved, target: str | None,
                       rates: Mapping[tuple[str, str], domain.FxQuote]) -> tuple:
    """(value, currency, rate, source) in the merchant's settlement currency `target`, or Nones if it is the same."""
    if target is None:
        return None, None, None, None
    rate = rates.get((refund.amount.currency, target))
    if rate is None:
        # Paying the customer does not wait on treasury data; finance sees the gap.
        log.warning("fx_rate_missing", refund_id=refund.refund_id, base=refund.amount.currency, quote=target)
        return None, target, None, None
    value = domain.convert(refund.amount.value, currency_exponent(refund.amount.currency),
                           currency_exponent(target), rate.rate)
    return value, target, rate.rate, rate.provenance


class HandOff:
    """Intents the consume step recorded claimed for this process (`lease_seconds`), passed to the
    executor in memory once their transaction has committed, in claims of at most `claim_size` rows.

    The stage calls `committed`/`rolled_back` after each consume transaction (shared/runtime/stage.py),
    so an attempt that rolled back hands nothing over. A crash leaves the rows `submitting` until their
    lease runs out; then any worker claims them and asks the gateway by key first, as after any crash.
    """

    def __init__(self, lease_seconds: float, claim_size: int) -> None:
        self.lease_seconds = lease_seconds
        self.claim_size = claim_size
        self._taking: list[store.Claim] = []  # recorded by the transaction in progress
        self.claims: collections.deque[tuple[float, store.Claim]] = collections.deque()  # (handed at, claim)
        self.ready = asyncio.Event()

    def taking(self, claim: store.Claim) -> None:
        if claim.rows:
            self._taking.append(claim)

    def committed(self) -> None:
        now = time.monotonic()
        for claim in self._taking:
            for start in range(0, len(claim.rows), self.claim_size):
                self.claims.append((now, replace(claim, rows=claim.rows[start:start + self.claim_size])))
        if self._taking:
            self.ready.set()
        self._taking = []

    def rolled_back(self) -> None:
        self._taking = []


@dataclass(frozen=True)
class Attempt:
    """What one claim of a payout came to."""

    result: GatewayResult | None = None
    error: GatewayError | None = None
    recovered_by_lookup: bool = False
    unrouted: bool = False  # the payment's gateway has no route: nothing was called
    looks_up: bool = True  # whether the gateway can be asked later (else only a webhook settles `pending`)


def _order(row: asyncpg.Record, destination_key: X25519PrivateKey | None) -> RefundOrder:
    settles_as = (row["settlement_value"], row["settlement_currency"]) if row["settlement_value"] else None
    destination = None
    if row["destination_sealed"] and destination_key is not None:
        # The customer's new bank account (an exit): opened only here, to pay it; never stored in the clear.
        destination = contact_seal.open_seal(destination_key, row["destination_sealed"], refund_id=row["refund_id"],
                                             customer_id=DESTINATION_SEALED_FOR)
    return RefundOrder(row["idempotency_key"], row["payment_id"], row["amount_value"], row["currency"],
                       row["channel"], settles_as, destination)


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
    anyway is dropped, counted and logged, never applied. Webhook outcomes that came
    while a row was claimed are applied on top of the claim's write, in its
    transaction (services/payout/webhooks.py).
    """

    def __init__(self, stage: Stage, gateways: Mapping[str, Gateway], *, reclaim_after_seconds: float,
                 sla_seconds: float, policy: PayoutPolicy = PayoutPolicy(), concurrency: int = 32,
                 rounds: int = 1, hand_off: HandOff | None = None) -> None:
        self.stage = stage
        self.gateways = gateways
        self.lease_seconds = reclaim_after_seconds
        self.sla_seconds = sla_seconds
        self.policy = policy
        self.rules = OutcomeRules(policy)
        self.claim_size = concurrency
        # Rounds in flight: while one waits on its slowest gateway call, the next claims and calls.
        self.rounds = rounds
        # What the consume step recorded claimed for this process (None: every intent is claimed here).
        self.hand_off = hand_off

    async def run_forever(self) -> None:
        """`rounds` rounds (shared/runtime/rounds.py): handed claims at once. A claim of due rows: without
        a hand-off, after every commit (it may have recorded intents); at once after one that came back
        full; else once a second (with a hand-off, that is how retries, exits, re-routes and leases run
        out are found)."""
        rounds = ClaimRounds(self.rounds, claim_size=self.claim_size)

        async def wake_on_commit() -> None:  # a committed batch may have recorded intents, a webhook re-routed one
            while True:
                await self.stage.committed.wait()
                self.stage.committed.clear()
                rounds.wake_all(claim=True)  # a waiting round claims at once, a busy one when done

        async def wake_on_hand_off() -> None:  # what the consume step recorded comes handed, not by a claim
            while True:
                await self.hand_off.ready.wait()
                self.hand_off.ready.clear()
                rounds.wake_all()

        def handed() -> bool:
            return self.hand_off is not None and bool(self.hand_off.claims)

        waking = wake_on_commit() if self.hand_off is None else wake_on_hand_off()
        try:
            await asyncio.gather(waking, *(rounds.run(index, lambda claim: self.run_once(claim=claim), handed,
                                                      failed="payout_executor_failed")
                                            for index in range(self.rounds)))
        finally:  # stopping: what was handed over and not called for is due again at once, for any worker
            while self.hand_off is not None and self.hand_off.claims:
                await store.release(self.stage.pool, self.hand_off.claims.popleft()[1])

    async def run_once(self, *, claim: bool = True) -> int:
        """One round: a claim the consume step handed over, else (with `claim`) due intents claimed; pay
        them and write what each came to."""
        taken = await self._handed()
        if taken is None:
            if not claim:
                return 0
            taken = await store.claim_due(self.stage.pool, self.claim_size, self.lease_seconds)
        if not taken.rows:
            return 0
        claim = taken
        # tracing: one span per payout, continuing the trace its approval came in
        with tracing.resume({row["refund_id"]: row["traceparent"] for row in claim.rows}, "payout attempt") as spans:
            attempts = await self._attempts_under_lease(claim, spans)
            outcomes = self._outcomes(claim.rows, attempts)
            written, after_events = await self._save(claim, outcomes, spans)
        for row in claim.rows:
            if row["refund_id"] in written:
                observe(row, outcomes[row["refund_id"]], self.sla_seconds)
                if attempts[row["refund_id"]].unrouted:
                    UNROUTED.labels(row["gateway"]).inc()
            elif row["refund_id"] in outcomes:
                log.warning("payout_outcome_dropped_claim_lost", refund_id=row["refund_id"],
                            status=outcomes[row["refund_id"]].write.status)
                ABANDONED.labels("stale_write").inc()
        for row, outcome in after_events:
            observe(row, outcome, self.sla_seconds)
        return len(claim.rows)

    async def _handed(self) -> store.Claim | None:
        """The oldest handed claim; renewed first if it waited a third of its lease (a long queue), so
        no other worker claims its rows meanwhile; rows it lost are left to whoever holds them."""
        if self.hand_off is None or not self.hand_off.claims:
            return None
        handed_at, claim = self.hand_off.claims.popleft()
        if time.monotonic() - handed_at > claim.lease_seconds / 3:
            held = await store.renew(self.stage.pool, claim)
            claim = replace(claim, rows=[row for row in claim.rows if row["refund_id"] in held])
        return claim

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

    async def _save(self, claim: store.Claim, outcomes: dict[str, Outcome], spans: tracing.Spans
                    ) -> tuple[set[str], list[tuple[asyncpg.Record, Outcome]]]:
        """Write the outcomes the claim still holds, with their events, then the webhook outcomes that waited
        for them; return the refunds written and what the waiting events made of them."""
        async with self.stage.unit_of_work() as uow:
            written = await store.write_outcomes(uow.conn, claim, [outcome.write for outcome in outcomes.values()])
            after_events = await apply_waiting(uow.conn, self.rules, sorted(written))
            events = [event for r, outcome in outcomes.items() if r in written for event in outcome.events]
            events += [event for _, outcome in after_events for event in outcome.events]
            uow.emit(*tracing.stamp(events, spans))
        return written, after_events

    async def _attempts_under_lease(self, claim: store.Claim, spans: tracing.Spans) -> dict[str, Attempt]:
        """Each row's attempt, renewing the claim while calls run; rows it lost, or whose call broke, are left out."""
        calls = {row["refund_id"]: asyncio.create_task(self._attempt(row), context=spans.context(row["refund_id"]))
                 for row in claim.rows}  # tracing: the gateway call under its payout's span
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
        gateway = self.gateways.get(row["gateway"])
        if gateway is None:
            log.error("payout_gateway_not_configured", refund_id=row["refund_id"], gateway=row["gateway"])
            return Attempt(result=GatewayResult("failed", None, NOT_CONFIGURED), unrouted=True)
        try:
            if gateway.looks_up and row["attempts"] > 1:
                if known := await gateway.lookup(row["idempotency_key"], row["payment_id"]):
                    # An earlier attempt reached the gateway (crash, timeout), or its webhook is late: it stands.
                    log.info("payout_recovered_by_lookup", refund_id=row["refund_id"], status=known.status)
                    return Attempt(result=known, recovered_by_lookup=True)
            # Never asked before, or a gateway that cannot be asked: the same key replays its first answer.
            result = await gateway.refund(_order(row, self.policy.destination_key))
        except GatewayError as error:
            GATEWAY_ERRORS.labels(row["gateway"], error.reason, str(error.retryable).lower()).inc()
            return Attempt(error=error, looks_up=gateway.looks_up)
        if self.policy.kill_after_gateway_for and row["payment_id"] == self.policy.kill_after_gateway_for:
            log.warning("fault_injected_kill_after_gateway", refund_id=row["refund_id"])
            os.kill(os.getpid(), signal.SIGKILL)
        return Attempt(result=result, looks_up=gateway.looks_up)

    def _outcome(self, row: asyncpg.Record, attempt: Attempt) -> Outcome:
        result, error = attempt.result, attempt.error
        held = replace(store.PayoutWrite.unchanged(row),
                       recovered_by_lookup=row["recovered_by_lookup"] or attempt.recovered_by_lookup)
        if attempt.unrouted:
            return self.rules.finished(row, held, result)
        failed_attempts = row["error_attempts"] + 1
        if error is not None and (not error.retryable or self.policy.retry.exhausted(failed_attempts)):
            reason = error.reason if not error.retryable else f"retries_exhausted:{error.reason}"
            return self.rules.finished(row, held, GatewayResult("failed", None, reason))
        if error is not None:
            delay = self.policy.retry.delay(failed_attempts, random.random())
            log.info("payout_retry_scheduled", refund_id=row["refund_id"], error=error.reason, in_seconds=delay)
            return Outcome(replace(held, status="pending", retry_in_seconds=delay, last_error=error.reason,
                                   error_attempts=failed_attempts))
        if result.status == "pending":
            # The outcome comes by webhook; a gateway that can be asked is asked if it is later than the grace.
            wait = self.policy.webhook_grace_seconds if attempt.looks_up else store.WEBHOOK_ONLY
            return Outcome(replace(held, status="confirming", gateway_ref=result.gateway_ref or held.gateway_ref,
                                   retry_in_seconds=wait))
        if result.status == "failed":
            return self.rules.failed_or_rerouted(row, held, result)
        return self.rules.finished(row, held, result)
