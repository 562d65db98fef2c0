"""The production checks of shared/settings.py, setting by setting."""

import pytest

from services.notify.main import NotifySettings
from shared.gateway_routes import GatewayRoutes
from shared.settings import ProductionRefused, ServiceSettings

SAFE = {"environment": "production", "staff_jwks_url": "https://idp.example.com/.well-known/jwks.json"}
NOTIFY_SAFE = SAFE | {"customer_link_secret": "link-key", "webhook_secret": "whsec_abc",
                      "tracking_api_keys": {"key-1": "shop-eu"}}


def test_local_runs_keep_their_defaults():
    assert ServiceSettings().environment == "local"


def test_production_with_every_secret_set_starts():
    assert NotifySettings(**NOTIFY_SAFE).environment == "production"


@pytest.mark.parametrize(("change", "named"), [
    ({"staff_jwks_url": None}, "STAFF_JWKS_URL is not set"),
    ({"customer_link_secret": NotifySettings.model_fields["customer_link_secret"].default},
     "CUSTOMER_LINK_SECRET is the public default"),
    ({"webhook_secret": ""}, "WEBHOOK_SECRET is empty"),
    ({"tracking_api_keys": {}}, "TRACKING_API_KEYS is not set"),
])
def test_production_refuses_each_unsafe_setting_by_name(change, named):
    with pytest.raises(ProductionRefused) as refused:
        NotifySettings(**(NOTIFY_SAFE | change))
    assert named in str(refused.value)
    assert refused.value.code != 0


class GatewaySettings(ServiceSettings):
    gateway_routes: GatewayRoutes = {}
    payout_fault_kill_after_gateway_for: str | None = None


def _route(simulator: bool) -> dict:
    return {"kind": "stripe", "base_url": "https://api.stripe.com", "api_key": "sk_live_x",
            "webhook_secret": "whsec_x", "simulator": simulator}


def test_production_refuses_a_route_to_the_simulator_and_any_fault_injection():
    assert GatewaySettings(**SAFE, gateway_routes={"stripe": _route(False)}).gateway_routes
    with pytest.raises(ProductionRefused, match="GATEWAY_ROUTES routes 'sim' to the gateway simulator"):
        GatewaySettings(**SAFE, gateway_routes={"stripe": _route(False), "sim": _route(True)})
    with pytest.raises(ProductionRefused, match="PAYOUT_FAULT_KILL_AFTER_GATEWAY_FOR is fault injection"):
        GatewaySettings(**SAFE, payout_fault_kill_after_gateway_for="pay-1")
