"""Gateway settlement report files -> settlement lines, with every bad line named. Pure: no I/O.

Formats (column names per the gateways' public docs):
- `stripe`: itemized balance change report (`balance_change_from_activity.itemized.1`),
  amounts in major units, refunds negative; `reporting_category` `refund` or
  `refund_failure` (the refund came back); `source_id` is the refund id.
- `adyen`: Settlement details report; `Type` `Refunded` (gross debit) or
  `RefundedReversed` (gross credit); `Modification Reference` is the refund's PSP reference.
  Fees are in the net (settlement) currency; a row converted by Adyen (Net Currency other
  than Gross Currency) settled its net amount without the fees, in the net currency.

Rows of other kinds (charges, fees, payouts) are not refunds: they are listed
as ignored with their line numbers, never dropped silently.
"""

import csv
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal

from shared.contract.money import currency_exponent

FORMATS = ("stripe", "adyen")
_AMOUNT = re.compile(r"-?\d+(\.\d+)?")


@dataclass(frozen=True)
class ParsedLine:
    line_no: int
    txn_id: str  # the gateway's own id of this line; the same id twice is the same line
    gateway_ref: str
    kind: str  # refund | refund_reversal
    amount_value: int  # minor units, positive
    currency: str
    fee_value: int


@dataclass(frozen=True)
class LineError:
    line_no: int
    field: str
    message: str


@dataclass
class ParsedReport:
    lines: list[ParsedLine] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    ignored: list[tuple[int, str]] = field(default_factory=list)  # (line_no, why)
    rows: int = 0


class _BadField(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def minor_units(text: str, currency: str, field_name: str) -> int:
    """'25.00' EUR -> 2500. More decimals than the currency has is an error, never rounded."""
    text = (text or "").strip()
    if not _AMOUNT.fullmatch(text):
        raise _BadField(field_name, f"{text!r} is not a decimal amount")
    exponent = currency_exponent(currency)
    amount = Decimal(text)  # the pattern above admits only what Decimal reads
    if -amount.as_tuple().exponent > exponent:
        raise _BadField(field_name, f"{text} has more decimals than {currency} allows ({exponent})")
    return int(amount.scaleb(exponent))


def _currency(text: str, field_name: str) -> str:
    code = (text or "").strip().upper()
    try:
        currency_exponent(code)
    except ValueError as exc:
        raise _BadField(field_name, f"{text!r} is not an ISO 4217 currency") from exc
    return code


def _required(row: dict, name: str) -> str:
    value = (row.get(name) or "").strip()
    if not value:
        raise _BadField(name, "missing")
    return value


def _stripe(row: dict, line_no: int) -> ParsedLine | str:
    category = _required(row, "reporting_category")
    if category not in ("refund", "refund_failure"):
        return f"reporting_category {category} is not a refund"
    currency = _currency(row.get("currency", ""), "currency")
    gross = minor_units(row.get("gross", ""), currency, "gross")
    fee = minor_units(row.get("fee", ""), currency, "fee")
    net = minor_units(row.get("net", ""), currency, "net")
    if net != gross - fee:
        raise _BadField("net", f"net {row['net']} is not gross {row['gross']} minus fee {row['fee']}")
    if (category == "refund") != (gross < 0):
        raise _BadField("gross", f"a {category} must be {'negative' if category == 'refund' else 'positive'}")
    kind = "refund" if category == "refund" else "refund_reversal"
    return ParsedLine(line_no, _required(row, "balance_transaction_id"), _required(row, "source_id"), kind,
                      abs(gross), currency, fee)


_ADYEN_FEES = ("Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)")


def _adyen(row: dict, line_no: int) -> ParsedLine | str:
    kind = {"Refunded": "refund", "RefundedReversed": "refund_reversal"}.get(_required(row, "Type"))
    if kind is None:
        return f"Type {row['Type']} is not a refund"
    currency = _currency(row.get("Gross Currency", ""), "Gross Currency")
    column = "Gross Debit (GC)" if kind == "refund" else "Gross Credit (GC)"
    gross = minor_units(row.get(column, ""), currency, column)
    if gross <= 0:
        raise _BadField(column, "must be positive")
    # Fees and net are in the settlement (net) currency; without a Net Currency it is the gross one.
    net_currency = _currency(row.get("Net Currency") or currency, "Net Currency")
    fees = sum(minor_units(row.get(name) or "0", net_currency, name) for name in _ADYEN_FEES)
    if net_currency != currency:
        # Converted by Adyen: what the balance moved by is the net side, without the fees on it.
        net_column = "Net Debit (NC)" if kind == "refund" else "Net Credit (NC)"
        net = minor_units(row.get(net_column, ""), net_currency, net_column)
        gross, currency = (net - fees if kind == "refund" else net + fees), net_currency
        if gross <= 0:
            raise _BadField(net_column, "leaves nothing once the fees are taken off")
    reference = _required(row, "Modification Reference")
    txn_id = f"{_required(row, 'Batch Number')}:{reference}:{row['Type']}"
    return ParsedLine(line_no, txn_id, reference, kind, gross, currency, fees)


_PARSERS = {"stripe": _stripe, "adyen": _adyen}
REQUIRED_COLUMNS = {
    "stripe": {"balance_transaction_id", "currency", "gross", "fee", "net", "reporting_category", "source_id"},
    "adyen": {"Type", "Modification Reference", "Gross Currency", "Gross Debit (GC)", "Gross Credit (GC)",
              "Batch Number"},
}


def _missing(fmt: str, reader: csv.DictReader) -> set[str]:
    return REQUIRED_COLUMNS[fmt] - set(reader.fieldnames or ())


def missing_columns(fmt: str, text: str) -> set[str]:
    """The required columns the file's header lacks: all of them for something that is not a report."""
    return _missing(fmt, csv.DictReader(io.StringIO(text)))


def parse(fmt: str, text: str) -> ParsedReport:
    """Every data row ends as a line, an error or an ignored row, each with its line number."""
    report = ParsedReport()
    reader = csv.DictReader(io.StringIO(text))
    missing = _missing(fmt, reader)
    if missing:
        report.errors.append(LineError(1, ",".join(sorted(missing)), "missing columns in the header"))
        return report
    for row in reader:
        report.rows += 1
        line_no = reader.line_num
        if None in row or any(value is None for value in row.values()):
            report.errors.append(LineError(line_no, "*", f"expected {len(reader.fieldnames)} columns"))
            continue
        try:
            parsed = _PARSERS[fmt](row, line_no)
        except _BadField as bad:
            report.errors.append(LineError(line_no, bad.field, str(bad)))
            continue
        if isinstance(parsed, str):
            report.ignored.append((line_no, parsed))
        else:
            report.lines.append(parsed)
    return report
