"""Staff tokens from an identity provider: RS256/ES256 verified against a JWKS this test serves over
real HTTP, with issuer, audience and key rotation; HS256 only where a local secret is given."""

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.runtime.staff import IdentityProvider, Role, StaffVerifier, mint_token

ISSUER, AUDIENCE = "https://idp.example.com/", "refund-backoffice"


class Jwks:
    """An identity provider's JWKS endpoint whose keys can be rotated."""

    def __init__(self) -> None:
        self.keys: dict[str, object] = {}
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"keys": [jwks.public(kid) for kid in jwks.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/.well-known/jwks.json"

    def add(self, kid: str, private_key) -> None:
        self.keys[kid] = private_key

    def public(self, kid: str) -> dict:
        key = self.keys[kid]
        algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
        return {**algorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig"}

    def token(self, kid: str, alg: str, **claims) -> str:
        now = datetime.now(UTC)
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "rita", "roles": ["reviewer"], "iat": now,
                "exp": now + timedelta(minutes=5)} | claims
        return jwt.encode(body, self.keys[kid], algorithm=alg, headers={"kid": kid})


@pytest.fixture
def idp():
    jwks = Jwks()
    jwks.add("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    jwks.add("ec-1", ec.generate_private_key(ec.SECP256R1()))
    yield jwks
    jwks.server.shutdown()


def _verifier(idp: Jwks, local_secret: str | None = None) -> StaffVerifier:
    return StaffVerifier(IdentityProvider(idp.url, ISSUER, AUDIENCE, refresh_cooldown_seconds=0), local_secret)


async def test_rs256_and_es256_tokens_from_the_provider_are_accepted(idp):
    verifier = _verifier(idp)
    assert (await verifier.verify(idp.token("rsa-1", "RS256"))).roles == {Role.REVIEWER}
    assert (await verifier.verify(idp.token("ec-1", "ES256", sub="fin"))).user_id == "fin"


@pytest.mark.parametrize("claims", [{"iss": "https://evil.example.com/"}, {"aud": "another-app"},
                                    {"exp": datetime.now(UTC) - timedelta(seconds=1)}, {"roles": ["admin"]}])
async def test_wrong_issuer_audience_expired_or_unknown_role_is_refused(idp, claims):
    with pytest.raises(jwt.InvalidTokenError):
        await _verifier(idp).verify(idp.token("rsa-1", "RS256", **claims))


async def test_a_rotated_key_is_fetched_and_a_key_not_in_the_jwks_is_refused(idp):
    verifier = _verifier(idp)
    await verifier.verify(idp.token("rsa-1", "RS256"))  # the key set is cached now
    idp.add("rsa-2", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert (await verifier.verify(idp.token("rsa-2", "RS256"))).user_id == "rita"
    stranger = Jwks()
    stranger.add("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(jwt.InvalidTokenError):  # same kid, another key: the signature fails
        await verifier.verify(stranger.token("rsa-1", "RS256"))
    stranger.server.shutdown()


async def test_hs256_is_accepted_only_with_a_local_secret(idp):
    local = mint_token("local-secret-long-enough-for-hs256!", "dev", [Role.FINANCE_LEAD])
    with pytest.raises(jwt.InvalidAlgorithmError):
        await _verifier(idp).verify(local)
    assert (await _verifier(idp, "local-secret-long-enough-for-hs256!").verify(local)).user_id == "dev"
