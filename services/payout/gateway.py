"""The gateway port and its adapters."""

from dataclasses import dataclass
from typing import Protocol

from gatewaysim.gateway import SimGateway


@dataclass(frozen=True)
class GatewayResult:
    succeeded: bool
    gateway_ref: str | None
    failure_reason: str | None


class Gateway(Protocol):
    """A refund gateway. `refund` must be idempotent by `idempotency_key`."""

    name: str

    async def refund(self, idempotency_key: str, payment_id: str, amount_value: int,
                     currency: str) -> GatewayResult: ...


class SimGatewayAdapter:
    """The simulator behind the port."""

    name = "sim"

    def __init__(self, sim: SimGateway) -> None:
        self.sim = sim

    async def refund(self, idempotency_key: str, payment_id: str, amount_value: int,
                     currency: str) -> GatewayResult:
        outcome = await self.sim.refund(idempotency_key, payment_id, amount_value, currency)
        return GatewayResult(outcome.status == "succeeded", outcome.gateway_ref, outcome.failure_reason)
