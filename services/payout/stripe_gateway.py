"""The real Stripe Refunds API behind the gateway port, through the official `stripe` package.

Idempotency: every create carries `Idempotency-Key` = the payout's key and
`metadata[refund_key]` = the same key, so the gateway can be asked later
which refund a key produced (list the payment's refunds, match the metadata)
without creating one.

Refund statuses (Stripe docs, the refund object): `pending` and
`requires_action` are not final; `succeeded`; `failed` and `canceled` are
final failures, with `failure_reason` on `failed`.
"""

from collections.abc import Mapping

import stripe

from services.payout.gateway import GatewayError, GatewayResult, RefundOrder

_STATUS = {"succeeded": "succeeded", "pending": "pending", "requires_action": "pending",
           "failed": "failed", "canceled": "failed"}


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


class StripeGatewayAdapter:
    name = "stripe"

    def __init__(self, api_key: str, *, api_base: str | None = None, timeout_seconds: float = 10.0) -> None:
        self.client = stripe.StripeClient(
            api_key, base_addresses={"api": api_base} if api_base else None,
            # Retries are payout's business (durable, with backoff), not the HTTP client's.
            max_network_retries=0, http_client=stripe.HTTPXClient(timeout=timeout_seconds))

    @staticmethod
    def _payment(payment_id: str) -> dict:
        return {"payment_intent": payment_id} if payment_id.startswith("pi_") else {"charge": payment_id}

    async def refund(self, order: RefundOrder) -> GatewayResult:
        # Stripe converts into the account's settlement currency itself; `settles_as` is payout's estimate.
        params = {**self._payment(order.payment_id), "amount": order.amount_value,
                  "metadata": {"refund_key": order.idempotency_key}}
        try:
            refund = await self.client.v1.refunds.create_async(params, {"idempotency_key": order.idempotency_key})
        except stripe.StripeError as error:
            raise classify(error) from error
        return refund_result(refund.to_dict())

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

    async def reversals(self, gateway_refs: list[str]) -> dict[str, str]:
        """Refunds that failed after succeeding (Stripe sends `refund.failed`; here: asked per refund)."""
        found = {}
        for ref in gateway_refs:
            try:
                refund = (await self.client.v1.refunds.retrieve_async(ref)).to_dict()
            except stripe.StripeError as error:
                raise classify(error) from error
            if refund["status"] == "failed":
                found[ref] = refund.get("failure_reason") or "unknown"
        return found
