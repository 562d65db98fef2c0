"""Reconcile: record what was paid; match settlement lines to it; keep the queue.

Lines come from reports pulled from the gateways (services/reconcile/pulls.py)
or uploaded. The matcher loop, in one transaction per pass: match unmatched
lines to paid refunds, report refunds still without a line after the SLA
(`missing_in_report`) and lines nothing internal accounts for after the grace
period (`missing_internally`). Late data re-matches and closes what it explains.
"""

import asyncio
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import structlog
from prometheus_client import Counter, Gauge

from services.reconcile import domain, store
from shared.runtime import tracing
from shared.contract.envelope import Outgoing, encode
from shared.contract.events import RefundDiscrepancy, RefundPaid, RefundReconciled
from shared.runtime.metrics import observe_completion
from shared.contract.money import Money
from shared.runtime.stage import Inbound, Stage

SOURCE = "refund-pipeline/reconcile"
log = structlog.get_logger()
LEDGER_IMBALANCE = Gauge(
    "refund_ledger_imbalance_minor",
    "Paid - (matched settlement + open discrepancies + resolved + awaiting), minor units; must be 0",
    ["currency"])
LEDGER_TERM = Gauge("refund_ledger_total_minor", "Each term of the ledger invariant, minor units",
                    ["currency", "term"])
OPEN_DISCREPANCIES = Gauge("refund_discrepancies_open", "Open discrepancies by category", ["category"])


async def record_paid(conn: asyncpg.Connection, items: list[Inbound]) -> list[Outgoing]:
    """A batch's paid refunds, recorded in one statement to wait for their settlement lines."""
    paid: dict[str, RefundPaid] = {}
    for item in items:  # a refund paid twice in one batch: the first event stands, as one at a time
        paid.setdefault(item.data.refund_id, item.data)
    outside = [refund for refund in paid.values() if refund.paid_outside]
    await store.record_paid(conn, [_paid_row(refund) for refund in paid.values() if not refund.paid_outside])
    # Paid outside the pipeline (staff, with evidence): no gateway line will come; in the queue at once.
    recorded = await store.record_paid_outside(conn, [_paid_row(refund) for refund in outside])
    now = datetime.now(UTC)
    for payout in recorded:
        log.warning("paid_outside_recorded", refund_id=payout["refund_id"], reference=payout["gateway_ref"])
    # The matcher publishes the others once their settlement line is there.
    return [refund_event(payout, domain.Match("discrepancy", domain.PAID_OUTSIDE), None, now) for payout in recorded]


def _paid_row(paid: RefundPaid) -> tuple:
    expected = paid.settlement_amount or paid.amount  # the report is in the merchant's settlement currency
    return (paid.refund_id, paid.gateway, paid.gateway_ref, paid.amount.value, paid.amount.currency,
            paid.channel.value, paid.model_dump(mode="json"), paid.paid_at, expected.value, expected.currency,
            tracing.traceparent_for(paid.refund_id), paid.attempt)


def refund_event(payout: asyncpg.Record, result: domain.Match, settled: Money | None, now: datetime,
                  reason_codes: list[str] | None = None) -> Outgoing:
    paid = RefundPaid.model_validate(payout["refund"])
    common = paid.model_dump(include={"refund_id", "request_id", "source", "order_id", "amount", "channel",
                                      "region", "drill", "gateway_ref"})
    if result.state == "matched":
        payload = RefundReconciled(**common, settled_amount=settled or paid.amount, reconciled_at=now,
                                   reason_codes=(reason_codes or []) + result.reason_codes)
    else:
        payload = RefundDiscrepancy(**common, category=result.category, settled_amount=settled,
                                    reason_codes=[result.category], detected_at=now)
    # tracing: the paid event's trace, stored with the payout; the matcher runs outside any
    return encode(payload, source=SOURCE, key=payout["refund_id"], traceparent=payout["traceparent"])


class Matcher:
    """Matches settlement lines to paid refunds, whichever way the lines arrived."""

    def __init__(self, stage: Stage, *, sla_seconds: float, missing_internally_after_seconds: float,
                 max_fee_bps: int = 10_000, fx_tolerance_bps: int = 0) -> None:
        self.stage = stage
        self.sla_seconds = sla_seconds
        self.missing_internally_after_seconds = missing_internally_after_seconds
        self.max_fee_bps = max_fee_bps
        self.fx_tolerance_bps = fx_tolerance_bps

    async def run_forever(self, checks_every_seconds: float = 1.0) -> None:
        """A pass whenever a commit may have brought a payout or line to match (else every 0.5 s); the
        look for what is missing in a report or internally (SLAs of minutes) at most every
        `checks_every_seconds`, not in every pass: while refunds flow, passes run many times a second."""
        loop = asyncio.get_running_loop()
        checked_at = -checks_every_seconds
        while True:
            try:
                self.stage.committed.clear()  # before the pass: a commit during it wakes the wait below
                checks = loop.time() - checked_at >= checks_every_seconds
                if checks:
                    checked_at = loop.time()
                if not await self.match_once(checks=checks):
                    try:
                        await asyncio.wait_for(self.stage.committed.wait(), timeout=0.5)
                    except TimeoutError:
                        pass
            except Exception:
                log.exception("reconcile_matcher_failed")
                await asyncio.sleep(1.0)

    async def match_once(self, batch: int = 1000, *, checks: bool = True) -> int:
        """Settle up to `batch` lines; with `checks`, open the discrepancies for what is missing."""
        async with self.stage.unit_of_work() as uow:
            conn = uow.conn
            lines = await store.lines_to_settle(conn, batch)
            uow.emit(*await self._settle(conn, lines))
            if checks:
                uow.emit(*await self._missing_in_report(conn))
                await self._missing_internally(conn)
        return len(lines)

    async def _settle(self, conn: asyncpg.Connection, lines: list[asyncpg.Record]) -> list[Outgoing]:
        """Settle the lines in id order, a round of set-based statements at a time (domain.rounds): each line
        against its payout as the line before it of the same reference left it."""
        if not lines:
            return []
        refs = [domain.GatewayRef.of(line) for line in lines]  # the line's report says which gateway it is from
        payouts = await store.lock_payouts(conn, refs)
        state = {ref: (payout["state"], payout["category"]) for ref, payout in payouts.items()}
        now = datetime.now(UTC)
        settled: dict[int, domain.Settlement] = {}
        for positions in domain.rounds(refs):
            settlements = []
            for position in positions:
                line, payout = lines[position], payouts[refs[position]]
                result = self._classify(line, payout, *state[refs[position]])
                state[refs[position]] = domain.payout_after(state[refs[position]], result)
                settlements.append(domain.settlement(line, payout, result))
            await store.settle(conn, settlements, now)
            settled.update((position, s) for position, s in zip(positions, settlements, strict=True))
        outgoing = []
        for position in sorted(settled):  # events in line order, as one line at a time
            s, payout = settled[position], payouts[refs[position]]
            if s.duplicate:
                continue
            took = (now - payout["paid_at"]).total_seconds()
            observe_completion("reconcile", s.result.state, payout["channel"], took,
                               overdue=took > self.sla_seconds, drill=bool(payout["refund"].get("drill")))
            outgoing.append(refund_event(payout, s.result, Money(value=s.settled[0], currency=s.settled[1]), now))
        return outgoing

    def _classify(self, line: asyncpg.Record, payout: asyncpg.Record, state: str, category: str | None
                  ) -> domain.Match:
        # Converted by the gateway at its own rate: payout's expected amount is an estimate.
        cross_currency = payout["currency"] != payout["expected_currency"]
        return domain.classify_line(line["kind"], state, category, payout["expected_value"],
                                    payout["expected_currency"], line["amount_value"], line["currency"],
                                    line["fee_value"], self.max_fee_bps,
                                    fx_tolerance_bps=self.fx_tolerance_bps if cross_currency else 0)

    async def _missing_in_report(self, conn: asyncpg.Connection) -> list[Outgoing]:
        overdue = await store.mark_missing_in_report(conn, self.sla_seconds)
        now = datetime.now(UTC)
        await store.open_discrepancies(conn, [
            store.Opening("missing_in_report", payout["refund_id"], domain.GatewayRef.of(payout), None,
                          (payout["expected_value"], payout["expected_currency"]), None) for payout in overdue])
        for payout in overdue:
            observe_completion("reconcile", "discrepancy", payout["channel"], self.sla_seconds, overdue=True,
                               drill=bool(payout["refund"].get("drill")))
        return [refund_event(p, domain.Match("discrepancy", "missing_in_report"), None, now) for p in overdue]

    async def _missing_internally(self, conn: asyncpg.Connection) -> None:
        orphans = await store.lines_missing_internally(conn, self.missing_internally_after_seconds)
        await store.open_discrepancies(conn, [
            store.Opening("missing_internally", None, domain.GatewayRef.of(line), line["id"], None,
                          (line["amount_value"], line["currency"])) for line in orphans])


LEDGER_DRIFT = Counter("refund_ledger_totals_drift_total",
                       "Rechecks that found the running ledger totals differ from the tables (then reset)")


@dataclass
class LedgerWatch:
    """The ledger invariant, exported continuously from the running totals; every `recheck_seconds` the
    totals are compared with the tables themselves (a drift is logged loudly and the totals reset)."""

    pool: asyncpg.Pool
    recheck_seconds: float
    _last_recheck: float = field(default=-math.inf)

    async def start(self) -> None:
        async with self.pool.acquire() as conn:
            if await store.sync_ledger_categories(conn, domain.PAYOUT_CATEGORIES):
                self._last_recheck = -math.inf  # the triggers counted another set so far

    async def check(self) -> None:
        async with self.pool.acquire() as conn:
            entries = await store.ledger(conn)
            if time.monotonic() - self._last_recheck >= self.recheck_seconds:
                entries = await self._recheck(conn, entries)
            self._export(entries)
            for category, n in (await store.open_discrepancy_counts(conn, domain.CATEGORIES)).items():
                OPEN_DISCREPANCIES.labels(category).set(n)

    async def _recheck(self, conn: asyncpg.Connection, entries: list[domain.Ledger]) -> list[domain.Ledger]:
        self._last_recheck = time.monotonic()
        recomputed = await store.ledger_recomputed(conn)
        if _nonzero(recomputed) != _nonzero(entries):
            LEDGER_DRIFT.inc()
            log.error("ledger_totals_drifted", totals=[vars(e) for e in entries],
                      recomputed=[vars(e) for e in recomputed])
            await store.reset_ledger_totals(conn, recomputed)
            return await store.ledger(conn)
        return entries

    @staticmethod
    def _export(entries: list[domain.Ledger]) -> None:
        for entry in entries:
            LEDGER_IMBALANCE.labels(entry.currency).set(entry.imbalance)
            for term in ("paid", "matched_settled", "open_discrepancies", "resolved", "awaiting", "fx_difference"):
                LEDGER_TERM.labels(entry.currency, term).set(getattr(entry, term))
            if entry.imbalance:
                log.error("ledger_invariant_broken", currency=entry.currency, imbalance=entry.imbalance)


def _nonzero(entries: list[domain.Ledger]) -> list[tuple]:
    """The ledger as comparable facts (a currency whose terms are all zero is no fact)."""
    return sorted(tuple(vars(e).values()) for e in entries if any(v for k, v in vars(e).items() if k != "currency"))
