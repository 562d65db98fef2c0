"""What reconcile tests feed it: payout's `refund.paid.v1` and gateways' settlement report lines."""

import uuid
from datetime import UTC, datetime

from shared.contract import topics
from shared.contract.envelope import encode
from shared.contract.events import RefundPaid
from shared.contract.money import Money
from shared.runtime.roles import Role
from tests.integration.helpers import staff_auth

PAYOUT_SOURCE = "refund-pipeline/payout"  # the only source reconcile trusts on refunds.paid
FINANCE = staff_auth("fin-ana", Role.FINANCE_LEAD)
STRIPE_HEADER = ("balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,reporting_category,"
                 "source_id,description")
ADYEN_HEADER = ("Company Account,Merchant Account,Psp Reference,Merchant Reference,Payment Method,Creation Date,"
                "TimeZone,Type,Modification Reference,Gross Currency,Gross Debit (GC),Gross Credit (GC),"
                "Exchange Rate,Net Currency,Net Debit (NC),Net Credit (NC),Commission (NC),Markup (NC),"
                "Scheme Fees (NC),Interchange (NC),Payment Method Variant,Modification Merchant Reference,"
                "Batch Number")


async def publish_paid(producer, ref: str, value: int, currency: str = "EUR", gateway: str = "stripe",
                       settlement_amount: Money | None = None) -> str:
    """Payout reports a refund paid on `gateway` under the gateway's reference `ref`; returns its refund id.

    `settlement_amount`: payout's estimate of what the merchant's balance moves by in its settlement currency."""
    refund_id = "rf_" + uuid.uuid4().hex
    event = RefundPaid(refund_id=refund_id, request_id="req-" + ref, source="shop-test", order_id="ord-" + ref,
                       amount=Money(value=value, currency=currency), channel="card", region="DE", gateway=gateway,
                       payout_id="po_" + refund_id[3:], gateway_ref=ref, paid_at=datetime.now(UTC),
                       settlement_amount=settlement_amount)
    out = encode(event, source=PAYOUT_SOURCE, key=refund_id)
    await producer.send_and_wait(topics.PAID, out.value, key=out.key.encode(), headers=list(out.headers.items()))
    return refund_id


def stripe_line(txn: str, ref: str, gross: str, currency: str = "eur", category: str = "refund") -> str:
    return f"{txn},2026-11-24 10:00:00,2026-11-26 00:00:00,{currency},{gross},0.00,{gross},{category},{ref},x"


def adyen_line(ref: str, gross: str, currency: str = "EUR", batch: int = 7) -> str:
    """A `Refunded` row of Adyen's settlement details report (gross debit, no fees)."""
    return (f"Co,Merch,psp-{ref},m1,visa,2026-11-24 10:00:00,UTC,Refunded,{ref},{currency},{gross},,1,{currency},"
            f"{gross},,0.00,0.00,0.00,0.00,visa,,{batch}")
