"""Matching settlement lines to paid refunds, and the ledger invariant. Pure: no I/O."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

# Discrepancies about a paid refund (its money is not accounted for by a matched line).
PAYOUT_CATEGORIES = frozenset({"missing_in_report", "amount_mismatch", "currency_mismatch", "fee_mismatch",
                               "reversed", "paid_outside"})
# Paid outside the pipeline (staff, with evidence): no gateway line will come; finance reconciles it by hand.
PAID_OUTSIDE = "paid_outside"
# Discrepancies about a report line nothing internal accounts for.
LINE_CATEGORIES = frozenset({"missing_internally", "duplicate"})
CATEGORIES = PAYOUT_CATEGORIES | LINE_CATEGORIES


class GatewayRef(NamedTuple):
    """A gateway's reference for a refund. Unique only on that gateway, so never used without it."""

    gateway: str
    reference: str

    @classmethod
    def of(cls, row: Mapping) -> "GatewayRef":
        """The reference of a payout, settlement line or discrepancy row."""
        return cls(row["gateway"], row["gateway_ref"])


@dataclass(frozen=True)
class Match:
    state: str  # matched | discrepancy
    category: str  # matched | one of CATEGORIES
    # A cross-currency match within the FX tolerance: settled minus expected, in minor units.
    fx_difference: int = 0

    @property
    def reason_codes(self) -> list[str]:
        return [f"fx_difference:{self.fx_difference}"] if self.fx_difference else []


def share(value: int, bps: int) -> int:
    """`bps` basis points of `value`, rounded up to a whole minor unit (a gateway cannot charge less than one)."""
    return -(-value * bps // 10_000)


def match(paid_value: int, paid_currency: str, settled_value: int, settled_currency: str, *,
          fx_tolerance_bps: int = 0) -> Match:
    """Exact to the minor unit; with `fx_tolerance_bps` (a cross-currency refund, converted by the
    gateway at its own rate) a line within that share of the expected amount matches, the gap recorded."""
    if settled_currency != paid_currency:
        return Match("discrepancy", "currency_mismatch")
    difference = settled_value - paid_value
    if difference == 0:
        return Match("matched", "matched")
    if abs(difference) <= share(paid_value, fx_tolerance_bps):
        return Match("matched", "matched", fx_difference=difference)
    return Match("discrepancy", "amount_mismatch")


def classify_line(kind: str, payout_state: str, payout_category: str | None, paid_value: int, paid_currency: str,
                  settled_value: int, settled_currency: str, fee_value: int = 0, max_fee_bps: int = 10_000, *,
                  fx_tolerance_bps: int = 0) -> Match:
    """A report line against the paid refund with its gateway and gateway reference.

    A refund already accounted for (matched, resolved, or in a discrepancy
    other than a missing line) makes a second refund line a duplicate; a line
    arriving after the refund was reported missing re-matches it. The gateway's
    fee on a refund may be at most `max_fee_bps` of it (rounded up to a minor
    unit). `fx_tolerance_bps` is given for a refund settled in another currency
    than it was paid in (see `match`).
    """
    if kind == "refund_reversal":
        return Match("discrepancy", "reversed")
    if payout_state in ("matched", "resolved") or (
            payout_state == "discrepancy" and payout_category != "missing_in_report"):
        return Match("discrepancy", "duplicate")
    result = match(paid_value, paid_currency, settled_value, settled_currency, fx_tolerance_bps=fx_tolerance_bps)
    if result.state == "matched" and fee_value > share(settled_value, max_fee_bps):
        return Match("discrepancy", "fee_mismatch")
    return result


def rounds(refs: Sequence[GatewayRef]) -> list[list[int]]:
    """A batch's lines (by position, given their references in order) in rounds that hold at most one line of
    each reference: the k-th line of every reference is in round k. Lines of different references touch
    different rows, so a round's lines can be settled by the same statements at once; rounds in order give
    each reference's lines in order, as one at a time would."""
    taken: dict[GatewayRef, int] = {}
    out: list[list[int]] = []
    for position, ref in enumerate(refs):
        k = taken[ref] = taken.get(ref, -1) + 1
        if k == len(out):
            out.append([])
        out[k].append(position)
    return out


def payout_after(state: tuple[str, str | None], result: Match) -> tuple[str, str | None]:
    """A payout's (state, category) after one of its lines: a duplicate leaves it as it was."""
    return state if result.category == "duplicate" else (result.state, result.category)


@dataclass(frozen=True)
class Settlement:
    """What one settlement line does to the books, given what it was found to be (`result`)."""

    line_id: int
    ref: GatewayRef
    refund_id: str  # the paid refund with the line's reference
    result: Match
    expected: tuple[int, str]  # what payout paid, in the settlement currency it expected
    settled: tuple[int, str]  # what the line says
    # Open discrepancies of `ref` the line explains, each (category, why); auto-resolved before `opens`.
    closes: tuple[tuple[str, str], ...]
    opens: str | None  # the category of the discrepancy the line opens, if any

    @property
    def duplicate(self) -> bool:
        """A line for a refund already accounted for: a discrepancy of its own; the payout is left as it was."""
        return self.result.category == "duplicate"

    @property
    def reverses(self) -> bool:
        """The money came back: the line, and the refund's matched line, are `reversed`."""
        return self.result.category == "reversed"


def settlement(line: Mapping, payout: Mapping, result: Match) -> Settlement:
    """A line with a paid refund always explains a missing-internally alarm raised before the refund arrived;
    a reversal supersedes every discrepancy about the refund, a match closes its missing-line alarm, and any
    other outcome opens a discrepancy of its category."""
    closes = [("missing_internally", f"paid refund {payout['refund_id']} arrived")]
    if result.category == "reversed":
        closes += [(category, "superseded by a reversal") for category in sorted(PAYOUT_CATEGORIES)]
    if result.state == "matched":
        closes.append(("missing_in_report", f"late settlement line {line['txn_id']}"))
    return Settlement(line["id"], GatewayRef.of(line), payout["refund_id"], result,
                      (payout["expected_value"], payout["expected_currency"]),
                      (line["amount_value"], line["currency"]), tuple(closes),
                      None if result.state == "matched" else result.category)


@dataclass(frozen=True)
class Ledger:
    """Per currency, in minor units: where every paid refund's money stands."""

    currency: str
    paid: int  # what payout reports it paid (in the merchant's settlement currency)
    # What matched settlement lines account for: the settled amount, except that a cross-currency
    # line matched within the FX tolerance counts at the amount payout expected...
    matched_settled: int
    open_discrepancies: int  # paid money in open payout-side discrepancies
    resolved: int  # paid money finance closed by decision
    awaiting: int  # paid, within the reconcile SLA, no line yet
    # Of `open_discrepancies`: paid money the gateway returned (status `reversed`), until finance
    # decides what happens to it. Shown on its own, not another term of the invariant.
    reversed: int = 0
    # ...and this is the gap: what those lines settled beyond (or, negative, short of) payout's
    # expected amount. The gateway settled matched_settled + fx_difference. Not a term of the invariant.
    fx_difference: int = 0

    @property
    def settled_by_gateway(self) -> int:
        """What the matched lines themselves say the gateway settled."""
        return self.matched_settled + self.fx_difference

    @property
    def imbalance(self) -> int:
        """Zero when paid = matched settlement + open discrepancies (+ what is decided or still in flight)."""
        return self.paid - self.matched_settled - self.open_discrepancies - self.resolved - self.awaiting
