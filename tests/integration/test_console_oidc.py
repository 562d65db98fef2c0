"""Signing in to the console through an identity provider (OIDC authorization code + PKCE), in a browser.

The provider is a minimal one run by this test (discovery, authorize, token, JWKS with an RS256 key).
Approval is pointed at the same JWKS and issuer, so the access token the console forwards is the one
approval verifies: the audit trail names the person the provider signed in.
"""

import base64
import hashlib
import secrets
import socket
import threading
import time
from urllib.parse import urlencode

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from playwright.async_api import async_playwright, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.routing import Route

from devstack.stack import CONSOLE
from shared.runtime.roles import Role
from tests.integration.helpers import publish, refund_of, staff_auth, valid_request
from tests.integration.service_fixtures import service_configured
from tests.integration.test_console import CHROMIUM_ARGS, SHOTS

pytestmark = pytest.mark.integration
CLIENT_ID, CLIENT_SECRET = "refund-console", "console-client-secret"
AUDIENCE = "refund-pipeline"
USERS = {"olga": ["senior_reviewer"], "mallory": []}


class Provider:
    """Discovery, an authorize page (pick a user, continue), the token endpoint (client secret + PKCE), JWKS."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.issuer = f"http://127.0.0.1:{self.port}"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
        self.jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True) | {
            "kid": "test-k1", "use": "sig", "alg": "RS256"}
        self.codes: dict[str, dict] = {}
        self.token_requests: list[dict] = []
        app = Starlette(routes=[
            Route("/.well-known/openid-configuration", self.discovery),
            Route("/authorize", self.authorize, methods=["GET", "POST"]),
            Route("/token", self.token, methods=["POST"]),
            Route("/jwks", self.jwks),
        ])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Provider":
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "the test OIDC provider did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def sign(self, claims: dict) -> str:
        return jwt.encode(claims, self.private_pem, algorithm="RS256", headers={"kid": "test-k1"})

    async def discovery(self, request: Request) -> JSONResponse:
        return JSONResponse({
            "issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"]})

    async def jwks(self, request: Request) -> JSONResponse:
        return JSONResponse({"keys": [self.jwk]})

    async def authorize(self, request: Request):
        if request.method == "GET":
            q = request.query_params
            assert q["client_id"] == CLIENT_ID and q["response_type"] == "code"
            hidden = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in q.items())
            options = "".join(f"<option>{name}</option>" for name in USERS)
            return HTMLResponse(f'<!doctype html><title>Test IdP</title><h1>Test identity provider</h1>'
                                f'<form method="post">{hidden}<label for="who">User</label>'
                                f'<select id="who" name="who">{options}</select>'
                                f'<button id="continue" type="submit">Continue</button></form>')
        form = await request.form()
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"user": form["who"], "nonce": form.get("nonce"), "redirect_uri": form["redirect_uri"],
                            "challenge": form.get("code_challenge")}
        return RedirectResponse(f"{form['redirect_uri']}?{urlencode({'code': code, 'state': form['state']})}",
                                status_code=302)

    async def token(self, request: Request) -> JSONResponse:
        form = await request.form()
        basic = request.headers.get("authorization", "")
        client = base64.b64decode(basic.removeprefix("Basic ")).decode() if basic.startswith("Basic ") else \
            f"{form.get('client_id')}:{form.get('client_secret')}"
        grant = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        self.token_requests.append({"client": client, "pkce_ok": bool(grant) and grant["challenge"] == challenge})
        if client != f"{CLIENT_ID}:{CLIENT_SECRET}":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if grant is None or grant["redirect_uri"] != form.get("redirect_uri") or grant["challenge"] != challenge:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now, user = int(time.time()), grant["user"]
        access = self.sign({"iss": self.issuer, "aud": AUDIENCE, "sub": user, "roles": USERS[user],
                            "iat": now, "exp": now + 600})
        id_token = self.sign({"iss": self.issuer, "aud": CLIENT_ID, "sub": user, "preferred_username": user,
                              "roles": USERS[user], "nonce": grant["nonce"], "iat": now, "exp": now + 600})
        return JSONResponse({"access_token": access, "token_type": "Bearer", "expires_in": 600,
                             "id_token": id_token})


async def test_oidc_sign_in_forwards_the_providers_token(stack, producer, status_feed):
    request = valid_request(amount=90_000, captured=90_000)  # 900.00 EUR: a review
    refund_id = refund_of(request)
    await publish(producer, request)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "pending_review", timeout=60)

    with Provider() as idp, \
            service_configured(stack, "approval", STAFF_JWKS_URL=f"{idp.issuer}/jwks", STAFF_TOKEN_ISSUER=idp.issuer,
                               STAFF_TOKEN_AUDIENCE=AUDIENCE), \
            service_configured(stack, CONSOLE, OIDC_ISSUER=idp.issuer, OIDC_CLIENT_ID=CLIENT_ID,
                               OIDC_CLIENT_SECRET=CLIENT_SECRET):
        console_url = stack.service_url(CONSOLE)
        SHOTS.mkdir(parents=True, exist_ok=True)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(f"{console_url}/queue")
                await page.click("#oidc-signin")
                await expect(page.locator("h1")).to_have_text("Test identity provider")
                assert page.url.startswith(f"{idp.issuer}/authorize?")
                await page.select_option("#who", "olga")
                await page.click("#continue")
                await expect(page.locator("#signed-in-as")).to_contain_text("olga (senior reviewer)")
                assert page.url == f"{console_url}/queue"
                assert idp.token_requests[-1] == {"client": f"{CLIENT_ID}:{CLIENT_SECRET}", "pkce_ok": True}
                # Approval verified the provider's RS256 token itself: the queue is there, not an error.
                row = page.locator(f"tr[data-refund-id='{refund_id}']")
                await expect(row).to_be_visible()
                await page.screenshot(path=SHOTS / "console-oidc-queue.png", full_page=True)
                await row.locator("input[name=reason]").fill("checked with the customer, signed in via SSO")
                await row.locator("button[type=submit]").click()
                await expect(page.locator(".notice.ok")).to_contain_text(refund_id)

                # A callback not started by this browser (unknown state) signs nobody in.
                other = await browser.new_page()
                refused = await other.goto(f"{console_url}/auth/callback?code=forged&state=forged")
                assert refused.status == 401
                await expect(other.locator("#signin-error")).to_be_visible()
            finally:
                await browser.close()
        review = httpx.get(f"{stack.service_url('approval')}/v1/reviews/{refund_id}", timeout=30,
                           headers=staff_auth("auditor", Role.REVIEWER)).json()
        assert [(a["actor"], a["action"]) for a in review["audit"]][-1] == ("olga", "approve")
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) in ("approved", "paid", "reconciled"),
                                      timeout=60)
