"""A refund asked over HTTP, whichever personality asked: checks, faults, FX, fee, the ledger row.

The order matters: `sim-5xx`/`sim-down` answer 503 before anything is read
into a transaction or recorded; the payment is locked so concurrent refunds
on it cannot take more than was captured; a key the ledger already has
returns its refund and never pays twice; `sim-timeout` holds the answer of
the call that recorded the refund (after its commit) past the client's timeout.
"""

import asyncio
import secrets
import string
from dataclasses import dataclass, field
from typing import Literal

import asyncpg
from prometheus_client import Counter

from gatewaysim import faults as fault_rules, fx, ledger
from gatewaysim.web import SimContext

REFUNDS = Counter("gatewaysim_refunds_total", "Refunds the simulator recorded, by first outcome",
                  ["account", "status"])
FAULTS = Counter("gatewaysim_faults_total", "Calls answered with an injected fault", ["account", "fault"])
RefusalCode = Literal["unknown_payment", "currency_mismatch", "invalid_amount", "nothing_left", "amount_too_large"]


class RefundRefused(Exception):
    """The gateway refuses the refund (each personality answers it in its own shape)."""

    def __init__(self, code: RefusalCode, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class RefundAsk:
    account: str
    personality: Literal["stripe", "adyen"]
    payment_ref: str  # the payment's id (or, Stripe-shaped, its charge's id)
    amount_value: int | None  # None: what is left
    currency: str | None  # None: the payment's
    idempotency_key: str | None  # the pipeline's key; None: the refund's own id
    channel: str = "card"
    metadata: dict = field(default_factory=dict)


def new_gateway_ref(personality: str) -> str:
    if personality == "stripe":
        return "re_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


async def unavailable(ctx: SimContext, ask: RefundAsk) -> bool:
    """Whether this call meets `sim-down` or one of the first `sim-5xx` answers (nothing is recorded)."""
    payment_id = ask.payment_ref
    if payment_id.startswith("ch_"):  # a charge names its payment only through the ledger (a hash of its id)
        payment = await ledger.find_payment(ctx.pool, ask.account, ask.payment_ref)
        payment_id = payment["id"] if payment else ask.payment_ref
    down, transient = fault_rules.unavailable(payment_id, ctx.faults)
    counted_as = ask.idempotency_key or f"payment:{payment_id}"
    if down or (transient and await ledger.count_rejection(ctx.pool, ask.account, counted_as)):
        FAULTS.labels(ask.account, "down" if down else "5xx").inc()
        return True
    return False


async def create(conn: asyncpg.Connection, ctx: SimContext, ask: RefundAsk) -> tuple[asyncpg.Record, bool]:
    """The refund for this ask (the ledger row) and whether this call made it; raises RefundRefused before
    it writes anything."""
    payment = await ledger.find_payment(conn, ask.account, ask.payment_ref, lock=True)
    if payment is None:
        raise RefundRefused("unknown_payment", ask.payment_ref)
    gateway_ref = new_gateway_ref(ask.personality)
    key = ask.idempotency_key or gateway_ref
    # After the lock, in a statement of its own: it sees every refund on the payment committed meanwhile.
    refunded, key_used = await ledger.refunded_and_key_used(conn, ask.account, payment["id"], key)
    if key_used:
        existing = await ledger.refund_by_key(conn, ask.account, key)
        await ledger.count_call(conn, ask.account, key)
        return existing, False
    currency = ask.currency or payment["currency"]
    if currency != payment["currency"]:
        raise RefundRefused("currency_mismatch", f"the payment is in {payment['currency']}")
    left = payment["amount_value"] - refunded
    amount = left if ask.amount_value is None else ask.amount_value
    if left <= 0:
        raise RefundRefused("nothing_left")
    if amount <= 0:
        raise RefundRefused("invalid_amount", "the amount must be positive")
    if amount > left:
        raise RefundRefused("amount_too_large", f"{left} is left to refund")
    settle_value, settle_currency = fx.settle(amount, currency, ctx.accounts[ask.account].settlement_currency,
                                              ctx.fx_rates, ctx.settings.fx_spread_bps)
    row = await ledger.record_refund(conn, ledger.NewRefund(
        ask.account, key, gateway_ref, payment["id"], amount, currency, settle_value, settle_currency,
        ask.channel, ask.personality, ask.metadata), ctx.faults)
    if row["inserted"]:
        REFUNDS.labels(ask.account, row["status"]).inc()
    return row, row["inserted"]


async def hold_if_lost(ctx: SimContext, row: asyncpg.Record) -> None:
    """`sim-timeout`: the call that recorded the refund gets its answer only after the client gave up."""
    if fault_rules.answer_lost(row["payment_id"], ctx.faults):
        FAULTS.labels(row["account"], "timeout").inc()
        await asyncio.sleep(ctx.settings.timeout_hold_seconds)
