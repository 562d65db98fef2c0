"""The payment port's adapters against a canned gateway on a local socket: what each answer means."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import TypeAdapter

from services.approval.domain import GatewayPayment
from services.approval.payments import GatewayPayments, GatewayUnanswered
from shared.runtime.gateway_routes import GatewayRoutes

INTENT = {"id": "pi_1", "object": "payment_intent", "amount": 10000, "amount_received": 10000, "currency": "eur",
          "status": "succeeded", "latest_charge": {"id": "ch_1", "object": "charge", "amount_captured": 9000,
                                                   "amount_refunded": 2500, "currency": "eur"}}
CHARGE = {"id": "ch_2", "object": "charge", "amount_captured": 700, "amount_refunded": 0, "currency": "usd"}
MISSING = {"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such"}}
ADYEN = {"pspReference": "psp-1", "amount": {"value": 5000, "currency": "EUR"},
         "capturedAmount": {"value": 5000, "currency": "EUR"}, "refundedAmount": {"value": 1000, "currency": "EUR"}}

ANSWERS = {  # path -> (status, body)
    "/s/v1/payment_intents/pi_1": (200, INTENT),
    "/s/v1/payment_intents/pi_unconfirmed": (200, {**INTENT, "amount_received": 0, "latest_charge": None}),
    "/s/v1/charges/ch_2": (200, CHARGE),
    "/s/v1/payment_intents/pi_gone": (404, MISSING),
    "/s/v1/payment_intents/pi_down": (503, {"error": {"type": "api_error", "message": "down"}}),
    "/s/v1/payment_intents/pi_limited": (429, {"error": {"type": "rate_limit_error", "message": "slow"}}),
    "/a/v71/payments/psp-1": (200, ADYEN),
    "/a/v71/payments/psp-gone": (404, {"status": 404, "errorCode": "000", "errorType": "validation"}),
    "/a/v71/payments/psp-down": (502, {"status": 502}),
    "/a/v71/payments/psp-garbled": (200, {"pspReference": "psp-garbled"}),
}


class CannedGateway(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0]
        keys = {"/s/": ("Authorization", "Bearer sk_test_unit"), "/a/": ("X-API-Key", "adyen_unit")}
        header, expected = keys[path[:3]]
        status, body = ANSWERS.get(path, (404, MISSING)) if self.headers.get(header) == expected else \
            (401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}})
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def gateway():
    server = ThreadingHTTPServer(("127.0.0.1", 0), CannedGateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def routes(base: str, api_key: str = "sk_test_unit") -> GatewayPayments:
    return GatewayPayments.from_routes(TypeAdapter(GatewayRoutes).validate_python({
        "sim": {"kind": "stripe", "base_url": f"{base}/s", "api_key": api_key, "webhook_secret": "whsec_x",
                "timeout_seconds": 2},
        "adyen": {"kind": "adyen", "base_url": f"{base}/a", "api_key": "adyen_unit", "hmac_key": "00",
                  "merchant_account": "M", "timeout_seconds": 2}}))


@pytest.mark.parametrize(("gateway_name", "payment_id", "expected"), [
    ("sim", "pi_1", GatewayPayment("EUR", 9000, 2500)),  # the latest charge says what was captured and refunded
    ("sim", "pi_unconfirmed", GatewayPayment("EUR", 0, 0)),
    ("sim", "ch_2", GatewayPayment("USD", 700, 0)),  # a charge id is read as a charge
    ("sim", "pi_gone", None),
    ("adyen", "psp-1", GatewayPayment("EUR", 5000, 1000)),
    ("adyen", "psp-gone", None),
])
async def test_an_answer_is_a_payment_or_unknown(gateway, gateway_name, payment_id, expected):
    assert await routes(gateway).read(gateway_name, payment_id) == expected


@pytest.mark.parametrize(("gateway_name", "payment_id", "reason"), [
    ("sim", "pi_down", "stripe_http_503"),
    ("sim", "pi_limited", "stripe_http_429"),
    ("adyen", "psp-down", "adyen_http_502"),
    ("adyen", "psp-garbled", "adyen_unreadable_payment"),
])
async def test_anything_else_is_no_answer(gateway, gateway_name, payment_id, reason):
    with pytest.raises(GatewayUnanswered) as unanswered:
        await routes(gateway).read(gateway_name, payment_id)
    assert unanswered.value.reason == reason


async def test_a_refused_key_is_no_answer_not_an_unknown_payment(gateway):
    with pytest.raises(GatewayUnanswered, match="stripe_http_401"):
        await routes(gateway, api_key="sk_test_wrong").read("sim", "pi_1")


async def test_a_gateway_that_is_not_listening_is_no_answer():
    with pytest.raises(GatewayUnanswered, match="connection"):
        await routes("http://127.0.0.1:9").read("sim", "pi_1")
    with pytest.raises(GatewayUnanswered, match="adyen_connection"):
        await routes("http://127.0.0.1:9").read("adyen", "psp-1")


def test_only_routed_gateways_are_verified(gateway):
    payments = routes(gateway)
    assert payments.reaches("sim") and payments.reaches("adyen") and not payments.reaches("alipay")


def test_production_refuses_routes_to_the_simulator():
    from services.approval.main import ApprovalSettings
    from shared.runtime.settings import ProductionRefused

    route = {"kind": "stripe", "base_url": "http://sim:8090/sim", "api_key": "k", "webhook_secret": "w",
             "simulator": True}
    assert ApprovalSettings(environment="local", gateway_routes={"sim": route}).gateway_routes
    with pytest.raises(ProductionRefused, match="GATEWAY_ROUTES routes 'sim' to the gateway simulator"):
        ApprovalSettings(environment="production", staff_jwks_url="https://idp.example/jwks",
                         gateway_routes={"sim": route})


def test_an_id_in_a_stripe_path_is_quoted_as_the_stripe_packages_own_services_quote_it():
    from stripe._util import sanitize_id

    from shared.runtime.http_client import StripeHttp

    for payment_id in ("pi_plain", "ch_a/b c", "pi_?x=1&y=2", "pi_ü"):
        assert StripeHttp.path("/v1/payment_intents/{}", payment_id) == f"/v1/payment_intents/{sanitize_id(payment_id)}"


async def test_the_stripe_packages_request_lines_are_formatted_only_when_someone_hears_them(
        gateway, monkeypatch, caplog):
    """The package formats every request and response line (the whole body for the debug line) before
    asking whether anyone listens; the hot calls format them only when its logger or console would."""
    import logging

    import stripe
    from stripe import _util

    from shared.runtime.http_client import StripeHttp

    formatted = []
    package_logfmt = _util.logfmt
    monkeypatch.setattr(_util, "logfmt", lambda props: formatted.append(props["message"]) or package_logfmt(props))
    monkeypatch.setattr(stripe, "log", None)
    monkeypatch.setattr(_util, "STRIPE_LOG", None)
    http = StripeHttp("sk_test_unit", f"{gateway}/s", 2)
    try:
        with caplog.at_level(logging.WARNING, logger="stripe"):
            assert (await http.call("get", "/v1/charges/ch_2"))["amount_captured"] == 700
        assert formatted == []

        with caplog.at_level(logging.INFO, logger="stripe"):
            await http.call("get", "/v1/charges/ch_2")
        assert "Stripe API response" in formatted and "API response body" not in formatted
        assert any("response_code=200" in r.getMessage() for r in caplog.records if r.name == "stripe")

        formatted.clear()
        with caplog.at_level(logging.DEBUG, logger="stripe"):
            await http.call("get", "/v1/charges/ch_2")
        assert "API response body" in formatted
        assert any('"amount_captured": 700' in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)

        formatted.clear()
        monkeypatch.setattr(stripe, "log", "info")  # the package's console switch still prints its lines
        with caplog.at_level(logging.WARNING, logger="stripe"):
            await http.call("get", "/v1/charges/ch_2")
        assert "Stripe API response" in formatted and "API response body" not in formatted
    finally:
        await http.close()
