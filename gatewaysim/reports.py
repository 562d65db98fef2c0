"""The simulator's settlement report written in real gateways' file layouts.

- `stripe`: the itemized balance-change report (Reports API
  `balance_change_from_activity.itemized.1`): one row per balance transaction,
  amounts in major units, refunds negative, lower-case currency.
- `adyen`: the Settlement details report (SDR): one row per journal entry,
  refunds as `Refunded` with a gross debit, reversals as `RefundedReversed`.
"""

import csv
import hashlib
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shared.money import major_units_text

if TYPE_CHECKING:
    from gatewaysim.gateway import SettlementLine

STRIPE_COLUMNS = ["balance_transaction_id", "created_utc", "available_on_utc", "currency", "gross", "fee", "net",
                  "reporting_category", "source_id", "description"]
ADYEN_COLUMNS = ["Company Account", "Merchant Account", "Psp Reference", "Merchant Reference", "Payment Method",
                 "Creation Date", "TimeZone", "Type", "Modification Reference", "Gross Currency",
                 "Gross Debit (GC)", "Gross Credit (GC)", "Exchange Rate", "Net Currency", "Net Debit (NC)",
                 "Net Credit (NC)", "Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)",
                 "Payment Method Variant", "Modification Merchant Reference", "Batch Number"]


def _txn_id(line: "SettlementLine") -> str:
    return "txn_" + hashlib.sha256(f"{line.line_id}:{line.kind}".encode()).hexdigest()[:24]


def _stripe_row(line: "SettlementLine", now: str) -> list[str]:
    sign = -1 if line.kind == "refund" else 1  # a refund leaves the balance; its failure returns
    gross, fee = sign * line.amount_value, line.fee_value
    category = "refund" if line.kind == "refund" else "refund_failure"
    gross_text, fee_text, net_text = (major_units_text(v, line.currency) for v in (gross, fee, gross - fee))
    return [_txn_id(line), now, now, line.currency.lower(), gross_text, fee_text, net_text, category,
            line.gateway_ref, f"REFUND FOR {line.gateway_ref}"]


def _adyen_row(line: "SettlementLine", now: str) -> list[str]:
    amount, fee = major_units_text(line.amount_value, line.currency), major_units_text(line.fee_value, line.currency)
    refund = line.kind == "refund"
    net = major_units_text(line.amount_value + (line.fee_value if refund else -line.fee_value), line.currency)
    return ["SimCompany", "SimMerchant", line.gateway_ref, line.gateway_ref, "visa", now, "UTC",
            "Refunded" if refund else "RefundedReversed", line.gateway_ref, line.currency,
            amount if refund else "", "" if refund else amount, "1", line.currency,
            net if refund else "", "" if refund else net, fee, "0", "0", "0", "visa", "", str(line.line_id)]


def render(fmt: str, lines: Sequence["SettlementLine"]) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    columns, row = {"stripe": (STRIPE_COLUMNS, _stripe_row), "adyen": (ADYEN_COLUMNS, _adyen_row)}[fmt]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(row(line, now) for line in lines)
    return out.getvalue()
