"""The gateway port and its adapters."""

import asyncio
from dataclasses import dataclass
from typing import Protocol

from gatewaysim.gateway import GatewayTimeout, GatewayUnavailable, SimGateway, SimRefund


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


@dataclass(frozen=True)
class GatewayResult:
    """Where a refund stands at the gateway."""

    status: str  # pending | succeeded | failed | reversed
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


class Gateway(Protocol):
    """A refund gateway. `refund` must be idempotent by `idempotency_key`."""

    name: str

    async def refund(self, order: RefundOrder) -> GatewayResult:
        """Ask for the refund; raises GatewayError when there is no answer."""

    async def lookup(self, idempotency_key: str, payment_id: str) -> GatewayResult | None:
        """The refund made under this key (for this payment), or None if the gateway never recorded one."""

    async def reversals(self, gateway_refs: list[str]) -> dict[str, str]:
        """Of these paid refunds, those the gateway reversed since, with the reason."""


def _result(refund: SimRefund) -> GatewayResult:
    return GatewayResult(refund.status, refund.gateway_ref, refund.failure_reason)


class SimGatewayAdapter:
    """The simulator behind the port, with a client-side timeout like any HTTP client."""

    name = "sim"

    def __init__(self, sim: SimGateway, timeout_seconds: float = 10.0) -> None:
        self.sim = sim
        self.timeout_seconds = timeout_seconds

    async def refund(self, order: RefundOrder) -> GatewayResult:
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return _result(await self.sim.refund(order.idempotency_key, order.payment_id, order.amount_value,
                                                     order.currency, order.channel, order.settles_as))
        except GatewayUnavailable as exc:
            raise GatewayError(f"gateway_http_{exc.status}", retryable=True) from exc
        except (GatewayTimeout, TimeoutError) as exc:
            raise GatewayError("gateway_timeout", retryable=True) from exc

    async def lookup(self, idempotency_key: str, payment_id: str) -> GatewayResult | None:
        found = await self.sim.lookup(idempotency_key)
        return _result(found) if found else None

    async def reversals(self, gateway_refs: list[str]) -> dict[str, str]:
        return await self.sim.reversals(gateway_refs)
