"""Payout's settings, read from the environment in `main` only."""

from pydantic import Field

from shared.contract import contact_seal
from shared.runtime.gateway_routes import GatewayRoutes
from shared.runtime.settings import ServiceSettings


class PayoutSettings(ServiceSettings):
    production_secrets = (*ServiceSettings.production_secrets, "destination_private_key")

    service_name: str = "payout"
    # Opens the customers' new payout destinations notify seals with its DESTINATION_PUBLIC_KEY
    # (shared/contract/contact_seal.py). The local pair is public: production refuses it.
    destination_private_key: str = contact_seal.LOCAL_DESTINATION_PRIVATE_KEY
    payout_sla_seconds: float = 120.0
    # The claim lease: a `submitting` intent whose claim was not renewed for this long is presumed
    # orphaned by a crash and re-claimed. A live worker renews its claim every third of it while the
    # gateway calls run, so this bounds crash recovery, not how long a gateway call may take.
    payout_reclaim_after_seconds: float = 30.0
    # Executor rounds in flight, each claiming up to 32 intents and calling their gateways at once: while
    # one round waits on its slowest call, the others claim and call (claims skip each other's rows, as
    # two replicas' do). With one round, make bench at 150/s offered waited 2.1 s (p50) from intent to outcome.
    payout_executor_rounds: int = Field(4, ge=1)
    payout_retry_base_seconds: float = 1.0
    payout_retry_cap_seconds: float = 300.0
    payout_retry_max_attempts: int = 8
    # A refund the gateway answered `pending` waits this long for its webhook before payout asks the
    # gateway (Stripe: by key); and as long again between later asks. Adyen cannot be asked: it re-sends.
    payout_webhook_grace_seconds: float = 60.0
    # Policy: which channels may fall back to which one when the original instrument is dead.
    payout_fallback_channel: str | None = "bank_transfer"
    payout_fallback_from: list[str] = ["card"]
    # Platform source -> the merchant's settlement currency, e.g. {"shop-us": "USD"}.
    payout_settlement_currency: dict[str, str] = {}
    # GATEWAY_ROUTES (JSON, shared/runtime/gateway_routes.py): the gateways payout pays through. A payment on a
    # gateway without a route is never paid: it fails `gateway_not_configured`.
    gateway_routes: GatewayRoutes = {}
    # Fault injection (tests only): SIGKILL after the gateway answered for this payment id.
    payout_fault_kill_after_gateway_for: str | None = None
