"""Which fault a refund meets, decided per payment id like a real gateway's magic test values.

Stripe has `pm_card_refundFail` and friends; here a payment id containing one
of these tokens behaves so on every call, which makes fault tests deterministic.

| token          | behaviour                                                              |
|----------------|------------------------------------------------------------------------|
| `sim-5xx`      | the first two calls answer 503 before anything is recorded             |
| `sim-down`     | every call answers 503                                                 |
| `sim-timeout`  | the first call is recorded (money moves) but the answer never arrives   |
| `sim-async`    | accepted as `pending`; confirmed `succeeded` after `confirm_after`     |
| `sim-reverse`  | succeeds, then is reversed (money back) after `reverse_after`          |
| `sim-decline`  | declined for good: `declined`                                          |
| `sim-expired`  | card refunds declined for good: `expired_or_canceled_card`             |
| `sim-fee`      | the settlement line carries a fee of `fee_bps` (at least 1 minor unit) |

On top, a share of other payments gets each fault at random but fixed per
payment (`decline_percent`, `transient_percent` -> `sim-5xx`,
`timeout_percent` -> `sim-timeout`, `async_percent` -> `sim-async`,
`reverse_percent` -> `sim-reverse`, `fee_percent` -> `sim-fee`), and every
call takes `latency_ms`.
"""

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

TRANSIENT_FAILURES = 2  # how many calls `sim-5xx` answers with 503
REVERSAL_REASON = "lost_or_stolen_card"


@dataclass(frozen=True)
class SimFaults:
    """Knobs for the simulator's behaviour (see the module docstring)."""

    decline_percent: int = 2
    transient_percent: int = 0
    timeout_percent: int = 0
    async_percent: int = 0
    reverse_percent: int = 0
    fee_percent: int = 0
    fee_bps: int = 150
    latency_ms: int = 0
    confirm_after: timedelta = timedelta(seconds=2)
    reverse_after: timedelta = timedelta(seconds=2)


def in_share(payment_id: str, percent: int, fault: str = "") -> bool:
    # Deterministic per payment, so a retry of the same refund gets the same answer.
    digest = hashlib.sha256((fault + payment_id).encode()).digest()
    return int.from_bytes(digest[:2], "big") % 100 < percent


def has(payment_id: str, fault: str, percent: int) -> bool:
    """The payment carries the fault's token, or falls in its random (fixed per payment) share."""
    return f"sim-{fault}" in payment_id or in_share(payment_id, percent, fault)


def first_outcome(payment_id: str, channel: str, faults: SimFaults) -> tuple[str, str | None]:
    if "sim-expired" in payment_id and channel == "card":  # a dead card; a bank transfer still works
        return "failed", "expired_or_canceled_card"
    if "sim-decline" in payment_id or in_share(payment_id, faults.decline_percent):
        return "failed", "declined"
    if has(payment_id, "async", faults.async_percent):
        return "pending", None
    return "succeeded", None


def unavailable(payment_id: str, faults: SimFaults) -> tuple[bool, bool]:
    """(always down, down for the first TRANSIENT_FAILURES calls of a key)."""
    return "sim-down" in payment_id, has(payment_id, "5xx", faults.transient_percent)


def answer_lost(payment_id: str, faults: SimFaults) -> bool:
    return has(payment_id, "timeout", faults.timeout_percent)


def will_reverse(payment_id: str, faults: SimFaults) -> bool:
    return has(payment_id, "reverse", faults.reverse_percent)


def fee(payment_id: str, settle_value: int, faults: SimFaults) -> int:
    """The gateway's fee on a refund, in minor units of its settlement currency."""
    if not has(payment_id, "fee", faults.fee_percent):
        return 0
    exact = Decimal(settle_value) * faults.fee_bps / 10_000
    return max(1, int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN)))
