"""The simulator's settlement report written in real gateways' file layouts.

- `stripe`: the itemized balance-change report (Reports API
  `balance_change_from_activity.itemized.1`): one row per balance transaction,
  amounts in major units, refunds negative, lower-case currency.
- `adyen`: the Settlement details report (SDR): one row per journal entry,
  refunds as `Refunded` with a gross debit, reversals as `RefundedReversed`;
  `Batch Number` is the settlement batch the line was closed into (the line id
  for lines read by cursor, which have none).

A line's time is when it was created (the time of the render for lines that have none).
"""

import csv
import hashlib
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shared.contract.money import major_units_text

if TYPE_CHECKING:
    from gatewaysim.ledger import SettlementLine

STRIPE_COLUMNS = ["balance_transaction_id", "created_utc", "available_on_utc", "currency", "gross", "fee", "net",
                  "reporting_category", "source_id", "description"]
ADYEN_COLUMNS = ["Company Account", "Merchant Account", "Psp Reference", "Merchant Reference", "Payment Method",
                 "Creation Date", "TimeZone", "Type", "Modification Reference", "Gross Currency",
                 "Gross Debit (GC)", "Gross Credit (GC)", "Exchange Rate", "Net Currency", "Net Debit (NC)",
                 "Net Credit (NC)", "Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)",
                 "Payment Method Variant", "Modification Merchant Reference", "Batch Number"]


def _txn_id(line: "SettlementLine") -> str:
    return "txn_" + hashlib.sha256(f"{line.line_id}:{line.kind}".encode()).hexdigest()[:24]


def _time(line: "SettlementLine", now: datetime) -> str:
    return (line.created_at or now).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _stripe_row(line: "SettlementLine", now: datetime) -> list[str]:
    at = _time(line, now)
    sign = -1 if line.kind == "refund" else 1  # a refund leaves the balance; its failure returns
    gross, fee = sign * line.amount_value, line.fee_value
    category = "refund" if line.kind == "refund" else "refund_failure"
    gross_text, fee_text, net_text = (major_units_text(v, line.currency) for v in (gross, fee, gross - fee))
    return [_txn_id(line), at, at, line.currency.lower(), gross_text, fee_text, net_text, category,
            line.gateway_ref, f"REFUND FOR {line.gateway_ref}"]


def _adyen_row(line: "SettlementLine", now: datetime) -> list[str]:
    amount, fee = major_units_text(line.amount_value, line.currency), major_units_text(line.fee_value, line.currency)
    refund = line.kind == "refund"
    net = major_units_text(line.amount_value + (line.fee_value if refund else -line.fee_value), line.currency)
    return ["SimCompany", "SimMerchant", line.gateway_ref, line.gateway_ref, "visa", _time(line, now), "UTC",
            "Refunded" if refund else "RefundedReversed", line.gateway_ref, line.currency,
            amount if refund else "", "" if refund else amount, "1", line.currency,
            net if refund else "", "" if refund else net, fee, "0", "0", "0", "visa", "",
            str(line.batch or line.line_id)]


def render(fmt: str, lines: Sequence["SettlementLine"]) -> str:
    now = datetime.now(UTC)
    columns, row = {"stripe": (STRIPE_COLUMNS, _stripe_row), "adyen": (ADYEN_COLUMNS, _adyen_row)}[fmt]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(row(line, now) for line in lines)
    return out.getvalue()
