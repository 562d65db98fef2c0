"""A Stripe-shaped gateway (Stripe, or the simulator's Stripe personality) through the official `stripe` package.

Idempotency: every create carries `Idempotency-Key` = the payout's key and
`metadata[refund_key]` = the same key, so the gateway can be asked later
which refund a key produced (list the payment's refunds, match the metadata)
without creating one, and so a webhook's refund names the payout it is for.

Refund statuses (Stripe docs, the refund object): `pending` and
`requires_action` are not final; `succeeded`; `failed` and `canceled` are
final failures, with `failure_reason` on `failed`. Outcomes after a `pending`
answer come as `charge.refund.updated` (or `refund.updated`) events; a refund
that had succeeded and failed afterwards comes as `refund.failed`.
"""

import json
from collections.abc import Mapping

import stripe

from services.payout.gateway import Acknowledgement, GatewayError, GatewayEvent, GatewayResult, RefundOrder, \
    WebhookRejected
from shared.runtime.gateway_routes import GatewayRoute
from shared.runtime.http_client import StripeHttp

_STATUS = {"succeeded": "succeeded", "pending": "pending", "requires_action": "pending",
           "failed": "failed", "canceled": "failed"}
# Event types that carry a refund's new status in `data.object`.
_REFUND_EVENTS = frozenset({"charge.refund.updated", "refund.updated", "refund.failed"})
SIGNATURE_TOLERANCE_SECONDS = 300


def refund_result(refund: Mapping) -> GatewayResult:
    """A Stripe refund object as the port's result."""
    status = refund["status"]
    if status not in _STATUS:
        raise GatewayError(f"stripe_unknown_refund_status:{status}", retryable=False)
    reason = refund.get("failure_reason") or ("canceled" if status == "canceled" else None)
    return GatewayResult(_STATUS[status], refund["id"], reason if _STATUS[status] == "failed" else None)


def classify(error: stripe.StripeError) -> GatewayError:
    """Network trouble, rate limits and 5xx are retryable; a request Stripe refused is not."""
    status = error.http_status or 0
    code = getattr(error, "code", None) or type(error).__name__
    retryable = isinstance(error, (stripe.APIConnectionError, stripe.RateLimitError)) or status >= 500 \
        or status == 409  # 409: a concurrent request with the same idempotency key is still running
    return GatewayError(f"stripe_{code}" if not retryable else f"stripe_http_{status or 'connection'}",
                        retryable=retryable)


def refund_event(event: Mapping) -> GatewayEvent | None:
    """A verified Stripe event as a refund outcome, or None if it is not one (another type, still pending)."""
    if event.get("type") not in _REFUND_EVENTS:
        return None
    refund = event["data"]["object"]
    result = refund_result(refund)
    if result.status == "pending":
        return None
    return GatewayEvent(event["id"], (refund.get("metadata") or {}).get("refund_key"), result.gateway_ref,
                        result.status, result.failure_reason)


class StripeGatewayAdapter:
    looks_up = True
    acknowledgement = Acknowledgement('{"received": true}', "application/json")

    def __init__(self, name: str, route: GatewayRoute) -> None:
        self.name = name
        self.http = StripeHttp(route.api_key.get_secret_value(), route.base, route.timeout_seconds)
        self.client = self.http.client
        self.webhook_secret = route.webhook_secret.get_secret_value()

    @staticmethod
    def _payment(payment_id: str) -> dict:
        return {"charge": payment_id} if payment_id.startswith(("ch_", "py_")) else {"payment_intent": payment_id}

    async def refund(self, order: RefundOrder) -> GatewayResult:
        # Stripe converts into the account's settlement currency itself; `settles_as` is payout's estimate.
        # The channel rides along in metadata: a re-routed refund says it is no longer the card's.
        params = {**self._payment(order.payment_id), "amount": order.amount_value,
                  "metadata": {"refund_key": order.idempotency_key, "channel": order.channel}}
        if order.destination:  # an exit to the customer's new bank account: where the transfer goes
            params["metadata"] |= {f"destination_{k}": v for k, v in order.destination.items() if k in ("iban", "holder")}
        try:
            refund = await self.http.call("post", "/v1/refunds", params, idempotency_key=order.idempotency_key)
        except stripe.StripeError as error:
            raise classify(error) from error
        return refund_result(refund)

    async def lookup(self, idempotency_key: str, payment_id: str) -> GatewayResult | None:
        # Stripe cannot be searched by idempotency key; the key is also in the payment's refunds' metadata.
        try:
            page = await self.client.v1.refunds.list_async({**self._payment(payment_id), "limit": 100})
            async for found in page.auto_paging_iter():
                refund = found.to_dict()
                if (refund.get("metadata") or {}).get("refund_key") == idempotency_key:
                    return refund_result(refund)
        except stripe.StripeError as error:
            raise classify(error) from error
        return None

    async def close(self) -> None:
        await self.http.close()

    def events(self, payload: bytes, headers: Mapping[str, str]) -> list[GatewayEvent]:
        try:
            stripe.Webhook.construct_event(payload, headers.get("stripe-signature"), self.webhook_secret,
                                           tolerance=SIGNATURE_TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError as error:
            raise WebhookRejected("timestamp" if "tolerance" in str(error) else "signature") from error
        except ValueError as error:  # not JSON, or not an event
            raise WebhookRejected("payload") from error
        try:
            event = refund_event(json.loads(payload))
        except (KeyError, TypeError, GatewayError) as error:
            raise WebhookRejected("payload") from error
        return [event] if event else []
