"""The gateway simulator as the external system it is: its own process (`python -m gatewaysim`), reached over HTTP.

Until devstack starts it, the `gateway_sim` fixture does, for the session: accounts `sim` and `stripe`
(Stripe-shaped), `adyen` (Adyen-shaped), and `quiet` (Stripe-shaped, whose webhooks go nowhere: the
outcome of a `pending` refund reaches payout only by lookup). Their webhooks point at the session's
payout, and every payout the stack starts from then on gets `GATEWAY_ROUTES` to them (as devstack
will pass it), so `service_configured(stack, "payout", ...)` keeps the routes.
"""

import contextlib
import json
import os
import secrets
import sys
from pathlib import Path

import httpx
import pytest

from devstack.processes import free_port, pid_alive, spawn, terminate, wait_ready

MERCHANT = "PipelineECOM"
STRIPE_SHAPED = ("sim", "stripe", "quiet")
# Short delays so the fault tests see confirmations and reversals quickly; a lost answer is held past
# payout's client timeout (the route's timeout_seconds).
DEFAULTS = dict(SIM_CONFIRM_AFTER_SECONDS="1", SIM_REVERSE_AFTER_SECONDS="1", SIM_TIMEOUT_HOLD_SECONDS="12",
                SIM_WEBHOOK_RETRY_BASE_SECONDS="0.5")
ROUTE_TIMEOUT_SECONDS = 5.0


class Simulator:
    """One simulator process on a fixed port with fixed accounts; restartable with other SIM_* settings."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(stack.run_dir) / "logs" / "gatewaysim.log"
        self.pid: int | None = None
        dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
        events = f"{stack.service_url('payout')}/v1/gateway-events"
        self.accounts = {
            name: {"personality": "stripe", "api_key": f"sk_test_{name}_{secrets.token_hex(8)}",
                   "webhook_secret": f"whsec_{secrets.token_hex(16)}",
                   "webhook_url": dead if name == "quiet" else f"{events}/{name}"}
            for name in STRIPE_SHAPED}
        self.accounts["adyen"] = {"personality": "adyen", "api_key": f"adyen_{secrets.token_hex(8)}",
                                  "webhook_secret": secrets.token_hex(32).upper(), "merchant_account": MERCHANT,
                                  "webhook_url": f"{events}/adyen"}

    def routes(self, timeout_seconds: float = ROUTE_TIMEOUT_SECONDS) -> dict:
        """GATEWAY_ROUTES for payout: one route per account, with the account's credentials."""
        routes = {}
        for name, account in self.accounts.items():
            route = {"kind": account["personality"], "base_url": f"{self.url}/{name}", "api_key": account["api_key"],
                     "simulator": True, "timeout_seconds": timeout_seconds}
            if account["personality"] == "stripe":
                route["webhook_secret"] = account["webhook_secret"]
            else:
                route |= {"hmac_key": account["webhook_secret"], "merchant_account": MERCHANT}
            routes[name] = route
        return routes

    def payout_env(self, timeout_seconds: float = ROUTE_TIMEOUT_SECONDS) -> dict[str, str]:
        return {"GATEWAY_ROUTES": json.dumps(self.routes(timeout_seconds))}

    def start(self, **env: str) -> None:
        process_env = {**os.environ, **DEFAULTS, **env, "SIM_ACCOUNTS": json.dumps(self.accounts),
                       "SIM_HTTP_PORT": str(self.port), "SIM_DATABASE_URL": self.stack.dsn, "PYTHONUNBUFFERED": "1"}
        self.pid = spawn([sys.executable, "-m", "gatewaysim"], self.log, cwd=self.stack.repo_root, env=process_env)
        wait_ready("gateway simulator", self._ready, self.pid, self.log, 60)

    def _ready(self) -> bool:
        try:
            answer = httpx.get(f"{self.url}/readyz", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        return answer.get("status") == "ready" and answer.get("pid") == self.pid

    def stop(self) -> None:
        if pid_alive(self.pid):
            terminate(self.pid, ["gatewaysim"], timeout=15)
        self.pid = None

    @contextlib.contextmanager
    def configured(self, **env: str):
        """The simulator runs with these SIM_* settings inside the block, and as before after it."""
        self.stop()
        self.start(**env)
        try:
            yield self
        finally:
            self.stop()
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


_RUNNING: list[Simulator] = []  # the session's one simulator


@pytest.fixture(scope="session")
def gateway_sim(stack):
    """The session's simulator. Each test module imports this fixture, which makes one definition per module:
    the first to run starts the simulator (and stops it at the end of the session), the others reuse it."""
    if _RUNNING:
        yield _RUNNING[0]
        return
    simulator = Simulator(stack)
    simulator.start()
    _RUNNING.append(simulator)
    os.environ.update(simulator.payout_env())
    stack.restart_service("payout")
    try:
        yield simulator
    finally:
        _RUNNING.clear()
        os.environ.pop("GATEWAY_ROUTES", None)
        simulator.stop()
        stack.restart_service("payout")


def on_gateway(request: dict, gateway: str) -> dict:
    """The request with its payment on `gateway` (an account of the simulator, or a gateway with no route)."""
    request["payment"]["gateway"] = gateway
    return request
