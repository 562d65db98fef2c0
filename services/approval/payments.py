"""The payment port: a refund's payment as its gateway holds it, read over the gateway's own API.

One adapter per route in GATEWAY_ROUTES (shared/runtime/gateway_routes.py), chosen by the route's `kind`:

- Stripe-shaped: the official `stripe` package, `GET /v1/payment_intents/{id}` with the latest charge
  expanded (`ch_`/`py_` ids: `GET /v1/charges/{id}`, as payout refunds them); captured = the charge's
  `amount_captured`, refunded = its `amount_refunded`.
- Adyen-shaped: aiohttp, `GET {base}/v71/payments/{pspReference}` with `X-API-Key`. This read is a
  simulator extension: Adyen has no payment lookup in its Checkout API, so a real Adyen integration
  takes captured and refunded amounts from Adyen's payment data (the payment's CAPTURE/REFUND
  notifications or its reports) instead; the adapter is where that would change.

An answer is a payment, or `None` when the gateway says it does not know it (404). Anything else --
timeout, network error, 5xx, 429, a refused key, an unreadable body -- is `GatewayUnanswered`: the
payment was not verified either way, and approval asks again later.
"""

import json
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import quote

import stripe

from services.approval.domain import GatewayPayment
from shared.runtime.gateway_routes import GatewayRoute, GatewayRoutes
from shared.runtime.http_client import HTTP_ERRORS, LazySession, StripeHttp


class GatewayUnanswered(Exception):
    """The gateway gave no usable answer; `reason` is short and stable (a log field and metric label)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PaymentReader(Protocol):
    """Reads one gateway's payments."""

    async def read(self, payment_id: str) -> GatewayPayment | None:
        """The payment; None if the gateway does not know it. Raises GatewayUnanswered."""

    async def close(self) -> None:
        """Closes its connections (at process stop)."""


class StripePayments:
    """A Stripe-shaped gateway (Stripe, or the simulator's Stripe personality)."""

    def __init__(self, route: GatewayRoute) -> None:
        self.http = StripeHttp(route.api_key.get_secret_value(), route.base, route.timeout_seconds)

    async def read(self, payment_id: str) -> GatewayPayment | None:
        try:
            if payment_id.startswith(("ch_", "py_")):
                return stripe_charge(await self.http.call("get", self.http.path("/v1/charges/{}", payment_id)))
            intent = await self.http.call("get", self.http.path("/v1/payment_intents/{}", payment_id),
                                          {"expand": ["latest_charge"]})
        except stripe.InvalidRequestError as error:
            if error.http_status == 404 and error.code == "resource_missing":
                return None
            raise GatewayUnanswered(f"stripe_http_{error.http_status}") from error
        except stripe.StripeError as error:
            raise GatewayUnanswered(f"stripe_http_{error.http_status or 'connection'}") from error
        return stripe_payment_intent(intent)

    async def close(self) -> None:
        await self.http.close()


def stripe_payment_intent(intent: Mapping) -> GatewayPayment:
    """A PaymentIntent as the gateway's payment: its latest charge says what was captured and refunded."""
    charge = intent.get("latest_charge")
    if isinstance(charge, Mapping):
        return stripe_charge(charge)
    try:  # no charge yet (not confirmed): whatever the intent received, nothing refunded
        return GatewayPayment(str(intent["currency"]).upper(), int(intent.get("amount_received") or 0), 0)
    except (KeyError, TypeError, ValueError):
        raise GatewayUnanswered("stripe_unreadable_payment_intent") from None


def stripe_charge(charge: Mapping) -> GatewayPayment:
    try:
        return GatewayPayment(str(charge["currency"]).upper(), int(charge.get("amount_captured") or 0),
                              int(charge.get("amount_refunded") or 0))
    except (KeyError, TypeError, ValueError):
        raise GatewayUnanswered("stripe_unreadable_charge") from None


class AdyenPayments:
    """An Adyen-shaped gateway (the simulator's Adyen personality; see the module docstring)."""

    def __init__(self, route: GatewayRoute) -> None:
        self.base = route.base
        self.http = LazySession(route.timeout_seconds, {"X-API-Key": route.api_key.get_secret_value(),
                                                        "Accept": "application/json"})

    async def read(self, payment_id: str) -> GatewayPayment | None:
        try:
            async with self.http.session.get(f"{self.base}/v71/payments/{quote(payment_id, safe='')}") as answer:
                status, body = answer.status, await answer.read()
        except TimeoutError as error:
            raise GatewayUnanswered("adyen_timeout") from error
        except HTTP_ERRORS as error:
            raise GatewayUnanswered("adyen_connection") from error
        if status == 404:
            return None
        if status != 200:
            raise GatewayUnanswered(f"adyen_http_{status}")
        try:
            return adyen_payment(json.loads(body))
        except ValueError:
            raise GatewayUnanswered("adyen_unreadable_payment") from None

    async def close(self) -> None:
        await self.http.close()


def adyen_payment(body: Mapping) -> GatewayPayment:
    try:
        captured, refunded = body["capturedAmount"], body.get("refundedAmount") or {"value": 0}
        return GatewayPayment(str(captured["currency"]).upper(), int(captured["value"]), int(refunded["value"]))
    except (KeyError, TypeError, ValueError):
        raise GatewayUnanswered("adyen_unreadable_payment") from None


class GatewayPayments:
    """Every routed gateway's reader, by gateway name (a refund's `payment.gateway`)."""

    def __init__(self, readers: Mapping[str, PaymentReader]) -> None:
        self.readers = dict(readers)

    @classmethod
    def from_routes(cls, routes: GatewayRoutes) -> "GatewayPayments":
        kinds = {"stripe": StripePayments, "adyen": AdyenPayments}
        return cls({name: kinds[route.kind](route) for name, route in routes.items()})

    def reaches(self, gateway: str) -> bool:
        """Whether the gateway has a route; one without is never paid (payout: `gateway_not_configured`)."""
        return gateway in self.readers

    async def read(self, gateway: str, payment_id: str) -> GatewayPayment | None:
        return await self.readers[gateway].read(payment_id)

    async def close(self) -> None:
        for reader in self.readers.values():
            await reader.close()
