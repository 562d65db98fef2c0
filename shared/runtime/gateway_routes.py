"""Which gateway a payment's `payment.gateway` name is sent to: explicit configuration, never a fallback.

One setting, `GATEWAY_ROUTES` (JSON), read by every service that talks to gateways (approval reads
payments, payout refunds and receives webhooks, reconcile pulls reports), so they agree on the routes.
A gateway name without a route is never paid (payout fails it `gateway_not_configured`).
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, model_validator


class GatewayRoute(BaseModel):
    """How to reach one gateway: its API, its credentials, and how its webhooks are signed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["stripe", "adyen"]
    base_url: HttpUrl
    api_key: SecretStr
    # Stripe: the endpoint's signing secret (whsec_...). Adyen: the hex HMAC key of the webhook.
    webhook_secret: SecretStr | None = None
    hmac_key: SecretStr | None = None
    merchant_account: str | None = None  # Adyen
    report_user: str | None = None  # Adyen report download (basic auth)
    report_password: SecretStr | None = None
    # The project's gateway simulator, not a real gateway: refused in production.
    simulator: bool = False
    timeout_seconds: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> "GatewayRoute":
        needed = {"stripe": ("webhook_secret",), "adyen": ("hmac_key", "merchant_account")}[self.kind]
        if missing := [name for name in needed if getattr(self, name) is None]:
            raise ValueError(f"a {self.kind} route needs {', '.join(missing)}")
        return self

    @property
    def base(self) -> str:
        return str(self.base_url).rstrip("/")


GatewayRoutes = dict[str, GatewayRoute]


def simulator_routes(routes: GatewayRoutes) -> list[str]:
    """The gateway names routed to the simulator (a production start refuses any)."""
    return sorted(name for name, route in routes.items() if route.simulator)
