"""The production checks of shared/runtime/settings.py, setting by setting."""

import pytest

from services.intake.settings import IntakeSettings
from services.notify.main import NotifySettings
from shared.contract import contact_seal
from shared.runtime.gateway_routes import GatewayRoutes
from shared.runtime.settings import ProductionRefused, ServiceSettings

SAFE = {"environment": "production", "staff_jwks_url": "https://idp.example.com/.well-known/jwks.json"}
CONTACT_PRIVATE, CONTACT_PUBLIC = contact_seal.new_key_pair()
_, DESTINATION_PUBLIC = contact_seal.new_key_pair()
NOTIFY_SAFE = SAFE | {"customer_link_secret": "link-key", "webhook_secret": "whsec_abc",
                      "tracking_api_keys": {"key-1": "shop-eu"}, "contact_private_key": CONTACT_PRIVATE,
                      "destination_public_key": DESTINATION_PUBLIC}


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
    ({"contact_private_key": contact_seal.LOCAL_PRIVATE_KEY}, "CONTACT_PRIVATE_KEY is the public default"),
    ({"destination_public_key": contact_seal.LOCAL_DESTINATION_PUBLIC_KEY},
     "DESTINATION_PUBLIC_KEY is the public default"),
])
def test_production_refuses_each_unsafe_setting_by_name(change, named):
    with pytest.raises(ProductionRefused) as refused:
        NotifySettings(**(NOTIFY_SAFE | change))
    assert named in str(refused.value)
    assert refused.value.code != 0


def test_intake_refuses_the_local_contact_key_in_production():
    assert IntakeSettings(**SAFE, contact_public_key=CONTACT_PUBLIC).contact_public_key == CONTACT_PUBLIC
    with pytest.raises(ProductionRefused, match="CONTACT_PUBLIC_KEY is the public default"):
        IntakeSettings(**SAFE)


class GatewaySettings(ServiceSettings):
    gateway_routes: GatewayRoutes = {}
    payout_fault_kill_after_gateway_for: str | None = None


def _route(simulator: bool) -> dict:
    return {"kind": "stripe", "base_url": "https://api.stripe.com", "api_key": "sk_live_x",
            "webhook_secret": "whsec_x", "simulator": simulator}


def test_production_refuses_a_route_to_the_simulator_and_any_fault_injection(monkeypatch):
    # pydantic-settings merges a dict setting from the environment into the one given (an integration
    # session in the same run exports GATEWAY_ROUTES).
    monkeypatch.delenv("GATEWAY_ROUTES", raising=False)
    assert GatewaySettings(**SAFE, gateway_routes={"stripe": _route(False)}).gateway_routes
    with pytest.raises(ProductionRefused, match="GATEWAY_ROUTES routes 'sim' to the gateway simulator"):
        GatewaySettings(**SAFE, gateway_routes={"stripe": _route(False), "sim": _route(True)})
    with pytest.raises(ProductionRefused, match="PAYOUT_FAULT_KILL_AFTER_GATEWAY_FOR is fault injection"):
        GatewaySettings(**SAFE, payout_fault_kill_after_gateway_for="pay-1")
