"""Payout decisions: retry schedule, error classification, routing, ETA, FX. Pure: no I/O."""

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import holidays

from shared.contract.lifecycle import is_reversal

# Gateway failure reasons that will not change on retry (Stripe's refund
# `failure_reason` values). Anything else a gateway declines with is treated the same.
FINAL_REASONS = frozenset({"expired_or_canceled_card", "lost_or_stolen_card", "declined", "insufficient_funds",
                           "charge_for_pending_refund_disputed", "merchant_request", "unknown"})
# Reasons after which the money can still reach the customer another way.
REROUTABLE_REASONS = frozenset({"expired_or_canceled_card", "lost_or_stolen_card"})

# Business days from the gateway's acceptance until the customer has the money.
FUNDS_BUSINESS_DAYS = {"card": 5, "bank_transfer": 2, "paypal": 1, "alipay": 1, "wechat_pay": 1, "wallet": 0}
# Funds land by the end of the business day, local time is out of scope: 17:00 UTC.
FUNDS_CUTOFF = time(17, 0, tzinfo=UTC)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits in [d/2, d], d = min(cap, base * 2**(n-1))."""

    base_seconds: float = 1.0
    cap_seconds: float = 300.0
    max_attempts: int = 8

    def delay(self, attempt: int, jitter: float) -> float:
        """Seconds before attempt `attempt + 1`; `jitter` in [0, 1) from the caller's random source."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** max(attempt - 1, 0))
        return ceiling / 2 + jitter * ceiling / 2

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts


def reroute(channel: str, failure_reason: str, fallback: str | None) -> str | None:
    """The channel to try next after a final failure, if policy allows one; else None.

    Money goes back the way it came by default; only a dead instrument (an
    expired or stolen card) may fall back, and only to the configured channel.
    """
    if fallback and fallback != channel and failure_reason in REROUTABLE_REASONS:
        return fallback
    return None


def _business_days_after(start: date, days: int, closed: holidays.HolidayBase) -> date:
    day = start
    while days > 0 or day.weekday() >= 5 or day in closed:
        day += timedelta(days=1)
        if day.weekday() < 5 and day not in closed:
            days -= 1
    return day


@functools.cache
def _closed_days(region: str, year: int) -> holidays.HolidayBase:
    # Building a calendar costs up to a few ms (DE): once per region and year, not per refund.
    try:
        return holidays.country_holidays(region, years=range(year, year + 2))
    except NotImplementedError:  # a region the holidays package has no calendar for: weekends only
        return holidays.HolidayBase()


def funds_eta(accepted_at: datetime, channel: str, region: str) -> datetime:
    """When the customer should have the money: business days per channel, on the region's calendar."""
    return _funds_eta_on(accepted_at.astimezone(UTC).date(), channel, region)


@functools.lru_cache(maxsize=1024)  # one answer per day, channel and region: each payout asks twice
def _funds_eta_on(accepted_on: date, channel: str, region: str) -> datetime:
    closed = _closed_days(region, accepted_on.year)
    day = _business_days_after(accepted_on, FUNDS_BUSINESS_DAYS.get(channel, 5), closed)
    return datetime.combine(day, FUNDS_CUTOFF)


@dataclass(frozen=True)
class FxQuote:
    """A recorded rate: 1 unit of `base` = `rate` units of `quote`, from `source` as of `as_of`."""

    base: str
    quote: str
    rate: Decimal
    source: str
    as_of: date

    @property
    def provenance(self) -> str:
        """Where the rate came from, as the payout row records it (`source@as_of`)."""
        return f"{self.source}@{self.as_of.isoformat()}"


def settlement_currency(settles_in: Mapping[str, str], platform: str, currency: str) -> str | None:
    """The merchant's settlement currency for a refund in `currency`, or None if it settles as it is paid."""
    target = settles_in.get(platform)
    return target if target and target != currency else None


def convert(value: int, base_exponent: int, quote_exponent: int, rate: Decimal) -> int:
    """Minor units in base -> minor units in quote, banker's rounding to the quote's minor unit."""
    major = Decimal(value).scaleb(-base_exponent) * rate
    return int(major.scaleb(quote_exponent).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


OPEN_STATUSES = frozenset({"pending", "confirming"})


def after_gateway_event(payout_status: str, event_status: str) -> str | None:
    """What a gateway-reported outcome (`succeeded`, `failed`, `reversed`) does to a payout no claim holds.

    `paid`, `failed` (which a dead card may turn into a re-route), `reversed` (a paid
    refund's money came back), `paid_then_reversed` (the reversal of a success payout
    had not heard of yet), or None: a finished payout stays as it is, except that a
    paid one can still be reversed.
    """
    if payout_status in OPEN_STATUSES:
        return {"succeeded": "paid", "failed": "failed", "reversed": "paid_then_reversed"}[event_status]
    if payout_status == "succeeded" and event_status in ("failed", "reversed"):
        return "reversed"
    return None


# Exits out of a failed payout (SPEC.md: new destination, re-route, paid outside the pipeline).
EXIT_OPTIONS = ("reroute", "paid_outside")  # what staff may choose; `new_destination` is the customer's


def exit_conflict(status: str, failure_reason: str | None, exit_pending: bool) -> str | None:
    """Why an exit cannot be taken now (HTTP 409), or None: only a failed payout that was never paid
    (not a reversal: that money came back from the customer's side) and has no exit in flight."""
    if status != "failed":
        return f"the payout is {status}; an exit is only for a failed payout"
    if is_reversal(failure_reason):
        return "the payout was reversed after it succeeded; that is reconciled, not re-driven"
    if exit_pending:
        return "an exit for this payout is already in progress"
    return None


def attempt_key(refund_id: str, attempt: int) -> str:
    """The idempotency key of a payout attempt: the refund's own for the first, a new one for each exit."""
    return refund_id if attempt == 1 else f"{refund_id}:{attempt}"


def attempt_payout_id(first_payout_id: str, attempt: int) -> str:
    base = first_payout_id.split(":", 1)[0]
    return base if attempt == 1 else f"{base}:{attempt}"
