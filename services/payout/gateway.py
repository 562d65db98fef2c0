"""The gateway port: how payout asks a gateway for a refund, and how a gateway tells payout what became of it.

Every adapter reaches its gateway over the gateway's own HTTP API and reads its
signed webhooks; which adapter serves a payment is explicit configuration
(`GATEWAY_ROUTES`, shared/runtime/gateway_routes.py), never a fallback.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class RefundOrder:
    """What payout asks a gateway to refund; `idempotency_key` makes asking twice safe."""

    idempotency_key: str
    payment_id: str
    amount_value: int
    currency: str
    channel: str
    # The merchant's side when it settles in another currency (value, currency), else None.
    settles_as: tuple[int, str] | None = None
    # Where to pay instead of back to the payment (an exit: the customer's new bank account, {"iban", "holder"}).
    destination: Mapping[str, str] | None = None


@dataclass(frozen=True)
class GatewayResult:
    """Where a refund stands at the gateway."""

    status: str  # pending | succeeded | failed
    gateway_ref: str | None
    failure_reason: str | None

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


class GatewayError(Exception):
    """A call that got no outcome. `retryable`: a later call may succeed (5xx, timeout, network)."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class GatewayEvent:
    """One outcome a gateway reported by webhook, verified, under the gateway's own id for it.

    `status`: `succeeded` (the refund went through), `failed` (it did not, or no
    longer: a failure of a refund that had succeeded is a reversal), `reversed`
    (the gateway says explicitly that a refund which had succeeded was reversed).
    """

    event_id: str
    refund_key: str | None  # the idempotency key the refund was created under
    gateway_ref: str | None
    status: Literal["succeeded", "failed", "reversed"]
    failure_reason: str | None = None


class WebhookRejected(Exception):
    """A webhook that is not the gateway's (bad or missing signature, stale timestamp, another account)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Acknowledgement:
    """What a gateway expects back for a webhook it may stop re-sending."""

    body: str
    media_type: str


class Gateway(Protocol):
    """A refund gateway, reached over its API. `refund` must be idempotent by `idempotency_key`."""

    name: str
    # Whether the gateway can be asked which refund a key made (Stripe can; Adyen cannot).
    looks_up: bool
    acknowledgement: Acknowledgement

    async def refund(self, order: RefundOrder) -> GatewayResult:
        """Ask for the refund; raises GatewayError when there is no answer."""

    async def lookup(self, idempotency_key: str, payment_id: str) -> GatewayResult | None:
        """The refund made under this key (for this payment), or None if the gateway never recorded one."""

    def events(self, payload: bytes, headers: Mapping[str, str]) -> list[GatewayEvent]:
        """The refund outcomes in a webhook, once its signature holds; raises WebhookRejected if it does not.

        Events about anything else (other event types, a refund still pending) are left out.
        """

    async def close(self) -> None:
        """Closes its connections (at process stop)."""
