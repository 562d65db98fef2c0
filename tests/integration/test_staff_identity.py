"""A running service trusts staff tokens from the identity provider's JWKS (served by this test)."""

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.service_fixtures import service_configured
from tests.unit.test_staff_jwks import AUDIENCE, ISSUER, Jwks

pytestmark = pytest.mark.integration


async def test_the_tracking_api_takes_provider_tokens_and_refuses_forged_ones(stack):
    idp, forger = Jwks(), Jwks()
    idp.add("k1", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    forger.add("k1", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    try:
        with service_configured(stack, "notify", STAFF_JWKS_URL=idp.url, STAFF_TOKEN_ISSUER=ISSUER,
                                STAFF_TOKEN_AUDIENCE=AUDIENCE, TRACKING_API_KEYS='{"key-a": "shop-a"}'):
            async with httpx.AsyncClient(base_url=stack.service_url("notify"), timeout=30) as notify:
                async def ask(token: str) -> int:
                    return (await notify.get("/v1/refunds/rf_nobody",
                                             headers={"Authorization": f"Bearer {token}"})).status_code

                assert await ask(idp.token("k1", "RS256")) == 404  # let in: staff see all; there is no such refund
                assert await ask(forger.token("k1", "RS256")) == 401
                assert await ask(idp.token("k1", "RS256", aud="another-app")) == 401
    finally:
        idp.server.shutdown()
        forger.server.shutdown()
