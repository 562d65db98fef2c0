"""The gateway simulator as the external system it is: its own process, started by devstack as part of
the stack, reached over HTTP.

The `gateway_sim` fixture adds, for the session, an account `quiet` (Stripe-shaped, whose webhooks go
nowhere: the outcome of a `pending` refund reaches payout only by lookup) to devstack's `sim` and `stripe`
(Stripe-shaped) and `adyen` (Adyen-shaped), with short confirm/reverse delays, and gives every payout
the stack starts from then on `GATEWAY_ROUTES` to all four (devstack passes GATEWAY_ROUTES and
SIM_ACCOUNTS from the environment through), so `service_configured(stack, "payout", ...)` keeps them.
"""

import contextlib
import json
import os
import secrets

import httpx
import pytest

from devstack.processes import free_port
from devstack.stack import ADYEN_MERCHANT, GATEWAYSIM

MERCHANT = ADYEN_MERCHANT
# Short delays so the fault tests see confirmations and reversals quickly; a lost answer is held past
# payout's client timeout (the route's timeout_seconds).
DEFAULTS = dict(SIM_CONFIRM_AFTER_SECONDS="1", SIM_REVERSE_AFTER_SECONDS="1", SIM_TIMEOUT_HOLD_SECONDS="12",
                SIM_WEBHOOK_RETRY_BASE_SECONDS="0.5")
ROUTE_TIMEOUT_SECONDS = 5.0


class Simulator:
    """The stack's simulator process with the test accounts; restartable with other SIM_* settings."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.url = stack.service_url(GATEWAYSIM)
        self.accounts = stack.simulator_accounts() | {"quiet": {
            "personality": "stripe", "api_key": f"sk_test_quiet_{secrets.token_hex(8)}",
            "webhook_secret": f"whsec_{secrets.token_hex(16)}",
            "webhook_url": f"http://127.0.0.1:{free_port()}/nobody-listens"}}

    def routes(self, timeout_seconds: float = ROUTE_TIMEOUT_SECONDS) -> dict:
        """GATEWAY_ROUTES: devstack's routes to its accounts, plus `quiet`, with this client timeout."""
        quiet = self.accounts["quiet"]
        routes = self.stack.gateway_routes() | {"quiet": {
            "kind": "stripe", "base_url": f"{self.url}/quiet", "api_key": quiet["api_key"],
            "webhook_secret": quiet["webhook_secret"], "simulator": True}}
        return {name: route | {"timeout_seconds": timeout_seconds} for name, route in routes.items()}

    def payout_env(self, timeout_seconds: float = ROUTE_TIMEOUT_SECONDS) -> dict[str, str]:
        return {"GATEWAY_ROUTES": json.dumps(self.routes(timeout_seconds))}

    def start(self, **env: str) -> None:
        self.stack.restart_service(GATEWAYSIM, {**DEFAULTS, **env, "SIM_ACCOUNTS": json.dumps(self.accounts)})

    @contextlib.contextmanager
    def configured(self, **env: str):
        """The simulator runs with these SIM_* settings inside the block, and as before after it."""
        self.start(**env)
        try:
            yield self
        finally:
            self.start()

    async def create_payment(self, account: str, payment_id: str, amount: int, currency: str) -> None:
        """A captured payment at the gateway, as the platform's own charge made it (idempotent)."""
        key = self.accounts[account]["api_key"]
        async with httpx.AsyncClient(base_url=f"{self.url}/{account}", timeout=30) as http:
            if account == "adyen":
                answer = await http.post("/sim/payments", headers={"X-API-Key": key}, json={
                    "pspReference": payment_id, "amount": {"value": amount, "currency": currency}})
            else:
                answer = await http.post("/v1/payment_intents", headers={"Authorization": f"Bearer {key}"}, data={
                    "id": payment_id, "amount": amount, "currency": currency.lower(), "confirm": "true"})
        assert answer.status_code == 200, answer.text

    async def pay_for(self, request: dict) -> dict:
        """Create the request's payment at its gateway (the request's `payment.gateway` account)."""
        payment = request["payment"]
        await self.create_payment(payment["gateway"], payment["id"], payment["captured"]["value"],
                                  payment["captured"]["currency"])
        return request


@pytest.fixture(scope="session")
def gateway_sim(stack):
    simulator = Simulator(stack)
    os.environ.update({"SIM_ACCOUNTS": json.dumps(simulator.accounts), **DEFAULTS, **simulator.payout_env()})
    simulator.start()
    stack.restart_service("payout")
    try:
        yield simulator
    finally:
        for name in ("SIM_ACCOUNTS", "GATEWAY_ROUTES", *DEFAULTS):
            os.environ.pop(name, None)
        stack.restart_service(GATEWAYSIM)
        stack.restart_service("payout")


def on_gateway(request: dict, gateway: str) -> dict:
    """The request with its payment on `gateway` (an account of the simulator, or a gateway with no route)."""
    request["payment"]["gateway"] = gateway
    return request
