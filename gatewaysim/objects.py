"""Ledger rows as the objects each personality's API and webhooks carry."""

import hashlib
from collections.abc import Mapping
from datetime import datetime

# The ledger's statuses as a Stripe refund's: a reversal is a refund that failed after succeeding.
_STRIPE_STATUS = {"pending": "pending", "succeeded": "succeeded", "failed": "failed", "reversed": "failed"}


def charge_id(payment_id: str) -> str:
    """The id of a payment's (only) charge, derived so that refunds need no join to name it."""
    return payment_id if payment_id.startswith("ch_") else "ch_" + hashlib.sha256(payment_id.encode()).hexdigest()[:24]


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


def stripe_refund(row: Mapping) -> dict:
    status = _STRIPE_STATUS[row["status"]]
    return {"id": row["gateway_ref"], "object": "refund", "amount": row["amount_value"],
            "currency": row["currency"].lower(), "payment_intent": row["payment_id"],
            "charge": charge_id(row["payment_id"]), "status": status,
            "failure_reason": row["failure_reason"] if status == "failed" else None,
            "metadata": dict(row["metadata"] or {}), "created": unix(row["created_at"]),
            "balance_transaction": None, "reason": None, "receipt_number": None}


def stripe_payment_intent(payment: Mapping, refunded: int) -> dict:
    charge = {"id": payment["charge_id"], "object": "charge", "amount": payment["amount_value"],
              "amount_captured": payment["amount_value"], "amount_refunded": refunded,
              "currency": payment["currency"].lower(), "payment_intent": payment["id"], "captured": True,
              "refunded": refunded >= payment["amount_value"], "status": "succeeded",
              "created": unix(payment["created_at"])}
    return {"id": payment["id"], "object": "payment_intent", "amount": payment["amount_value"],
            "amount_received": payment["amount_value"], "currency": payment["currency"].lower(),
            "status": "succeeded", "latest_charge": charge, "created": unix(payment["created_at"]),
            "livemode": False}


def adyen_amount(value: int, currency: str) -> dict:
    return {"value": value, "currency": currency}


def adyen_payment(payment: Mapping, refunded: int) -> dict:
    currency = payment["currency"]
    return {"pspReference": payment["id"], "amount": adyen_amount(payment["amount_value"], currency),
            "capturedAmount": adyen_amount(payment["amount_value"], currency),
            "refundedAmount": adyen_amount(refunded, currency)}


def adyen_refund_answer(row: Mapping) -> dict:
    metadata = row["metadata"] or {}
    return {"merchantAccount": metadata.get("merchantAccount"), "paymentPspReference": row["payment_id"],
            "pspReference": row["gateway_ref"], "reference": metadata.get("reference", row["idempotency_key"]),
            "status": "received", "amount": adyen_amount(row["amount_value"], row["currency"])}


def stripe_event(row: Mapping, event_type: str, created: datetime) -> tuple[str, dict]:
    """(event id, event): the id is stable per refund and change, so a re-send is a replay."""
    refund = stripe_refund(row)
    event_id = "evt_" + hashlib.sha256(
        f"{row['account']}:{row['gateway_ref']}:{event_type}:{refund['status']}".encode()).hexdigest()[:24]
    return event_id, {"id": event_id, "object": "event", "type": event_type, "created": unix(created),
                      "livemode": False, "api_version": "2024-06-20", "pending_webhooks": 1,
                      "request": {"id": None, "idempotency_key": None}, "data": {"object": refund}}


def adyen_notification(row: Mapping, event_code: str, success: bool, reason: str | None,
                       at: datetime) -> tuple[str, dict]:
    """(event id, notification) unsigned: the sender adds additionalData.hmacSignature with the account's key.

    Adyen's dedupe key is (eventCode, pspReference, success).
    """
    metadata = row["metadata"] or {}
    success_text = "true" if success else "false"
    item = {"eventCode": event_code, "success": success_text, "pspReference": row["gateway_ref"],
            "originalReference": row["payment_id"], "merchantAccountCode": metadata.get("merchantAccount", ""),
            "merchantReference": metadata.get("reference", row["idempotency_key"]),
            "amount": adyen_amount(row["amount_value"], row["currency"]),
            "eventDate": at.isoformat(timespec="seconds"), "reason": reason or ""}
    return f"{event_code}:{row['gateway_ref']}:{success_text}", {
        "live": "false", "notificationItems": [{"NotificationRequestItem": item}]}
