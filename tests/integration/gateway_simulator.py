"""The gateway simulator as the external HTTP gateway it is: its own process, started and stopped by a test.

`SimulatorProcess` runs `python -m gatewaysim` on a free port against a database of the test's own
(schema `gateway_sim`), so neither the stack's data nor another simulator shares its ledger.
`SimulatorClient` makes payments and refunds there over the simulator's HTTP API, as the platform and
payout do. `Accounts` names one Stripe-shaped and one Adyen-shaped account; their gateway names are
fresh per test run, so reconcile's cursors for them start empty too. `routes()` is the
GATEWAY_ROUTES the pipeline gets for them.
"""

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devstack.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
ADYEN_HMAC = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF"
STRIPE_KEY, ADYEN_KEY = "sk_test_reconcile_pull", "adyen_reconcile_pull_key"
REPORT_USER, REPORT_PASSWORD = "report_reconcile", "report-pw-reconcile"
MERCHANT = "SimMerchant"


@dataclass(frozen=True)
class Accounts:
    """A Stripe-shaped and an Adyen-shaped account (gateway names), each settling in its currency."""

    stripe: str = field(default_factory=lambda: f"sim-{uuid.uuid4().hex[:6]}")
    adyen: str = field(default_factory=lambda: f"adyen-{uuid.uuid4().hex[:6]}")
    stripe_settles_in: str | None = None
    adyen_settles_in: str | None = None

    def settings(self) -> dict:
        """SIM_ACCOUNTS."""
        return {
            self.stripe: {"personality": "stripe", "api_key": STRIPE_KEY, "webhook_secret": "whsec_reconcile_pull",
                          "settlement_currency": self.stripe_settles_in},
            self.adyen: {"personality": "adyen", "api_key": ADYEN_KEY, "webhook_secret": ADYEN_HMAC,
                         "settlement_currency": self.adyen_settles_in, "merchant_account": MERCHANT,
                         "report_user": REPORT_USER, "report_password": REPORT_PASSWORD},
        }

    def routes(self, base: str) -> dict:
        """GATEWAY_ROUTES for both accounts at the simulator on `base` (JSON-ready)."""
        return {
            self.stripe: {"kind": "stripe", "base_url": f"{base}/{self.stripe}", "api_key": STRIPE_KEY,
                          "webhook_secret": "whsec_reconcile_pull", "simulator": True, "timeout_seconds": 5},
            self.adyen: {"kind": "adyen", "base_url": f"{base}/{self.adyen}", "api_key": ADYEN_KEY,
                         "hmac_key": ADYEN_HMAC, "merchant_account": MERCHANT, "report_user": REPORT_USER,
                         "report_password": REPORT_PASSWORD, "simulator": True, "timeout_seconds": 5},
        }


class SimulatorProcess:
    """One simulator process of this test; `stop` and `start` again keep its port (a gateway outage)."""

    def __init__(self, dsn: str, log_path: Path, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, "SIM_DATABASE_URL": dsn, "SIM_HTTP_HOST": "127.0.0.1",
                    "SIM_HTTP_PORT": str(self.port), **settings}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "gatewaysim"], cwd=ROOT, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the simulator exited ({self.process.returncode}):\n"
                                     f"{self.log_path.read_text()[-3000:]}")
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=2).json()
                if ready.get("pid") == self.process.pid and ready.get("status") == "ready":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"the simulator was not ready within {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


class SimulatorClient:
    """Payments and refunds at the simulator, over its HTTP API; each returns the refund's gateway reference."""

    def __init__(self, base: str, accounts: Accounts) -> None:
        self.http = httpx.AsyncClient(base_url=base, timeout=15)
        self.accounts = accounts

    async def aclose(self) -> None:
        await self.http.aclose()

    async def stripe_refund(self, value: int, currency: str, token: str = "") -> str:
        account, payment = self.accounts.stripe, f"pi_{uuid.uuid4().hex[:16]}{'_' + token if token else ''}"
        bearer = {"Authorization": f"Bearer {STRIPE_KEY}"}
        made = await self.http.post(f"/{account}/v1/payment_intents", headers=bearer, data={
            "id": payment, "amount": value, "currency": currency.lower(), "confirm": "true"})
        assert made.status_code == 200, made.text
        key = f"po_{uuid.uuid4().hex}"
        refund = await self.http.post(f"/{account}/v1/refunds", headers=bearer | {"Idempotency-Key": key}, data={
            "payment_intent": payment, "amount": value, "metadata[refund_key]": key})
        assert refund.status_code == 200 and refund.json()["status"] == "succeeded", refund.text
        return refund.json()["id"]

    async def adyen_refund(self, value: int, currency: str, token: str = "") -> str:
        account, psp = self.accounts.adyen, f"PSP{uuid.uuid4().hex[:13].upper()}{'-' + token if token else ''}"
        key = {"X-API-Key": ADYEN_KEY}
        amount = {"value": value, "currency": currency}
        made = await self.http.post(f"/{account}/sim/payments", headers=key,
                                    json={"pspReference": psp, "amount": amount})
        assert made.status_code == 200, made.text
        idempotency = f"po_{uuid.uuid4().hex}"
        refund = await self.http.post(f"/{account}/v71/payments/{psp}/refunds",
                                      headers=key | {"Idempotency-Key": idempotency},
                                      json={"merchantAccount": MERCHANT, "amount": amount, "reference": idempotency})
        assert refund.status_code == 201, refund.text
        return refund.json()["pspReference"]


def sim_settings(**extra: str) -> dict[str, str]:
    """SIM_* settings for a test simulator: no random declines, fast Adyen batches."""
    return {"SIM_DECLINE_PERCENT": "0", "SIM_ADYEN_BATCH_SECONDS": "1", "SIM_TICK_SECONDS": "0.5", **extra}
