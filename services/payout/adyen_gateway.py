"""An Adyen-shaped gateway (Adyen's Checkout API v71, or the simulator's Adyen personality) over aiohttp.

A refund request only says `received`: the outcome always comes as a
notification (`REFUND` with `success` true or false; later `REFUND_FAILED` or
`REFUNDED_REVERSED`), each item signed with the webhook's HMAC key and verified
with the official `Adyen` package. Adyen has no API to ask which refund a key
made, so a payout waiting for an Adyen outcome waits for the notification, which
Adyen re-sends until it is acknowledged; a retried request under the same
`Idempotency-Key` replays the first answer and never refunds twice.

Notifications carry no signed timestamp (`eventDate` is not part of the HMAC), so
there is no freshness window to check: a replay is recognised by its id instead,
`(eventCode, pspReference, success)`, which is how Adyen itself says to dedupe.
"""

import binascii
import json
from collections.abc import Mapping

from Adyen.util import is_valid_hmac_notification

from services.payout.gateway import Acknowledgement, GatewayError, GatewayEvent, GatewayResult, RefundOrder, \
    WebhookRejected
from shared.runtime.gateway_routes import GatewayRoute
from shared.runtime.http_client import HTTP_ERRORS, LazySession

# 401/403: our credentials; 422: the request itself (unknown payment "167", amount "137"): asking again won't help.
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})


def classify(status: int, body: bytes) -> GatewayError:
    if status >= 500 or status in _RETRYABLE_STATUSES:
        return GatewayError(f"adyen_http_{status}", retryable=True)
    try:
        code = json.loads(body).get("errorCode")
    except (ValueError, AttributeError):
        code = None
    return GatewayError(f"adyen_{code}" if code else f"adyen_http_{status}", retryable=False)


def notification_event(item: Mapping) -> GatewayEvent | None:
    """One verified NotificationRequestItem as a refund outcome, or None if it is not about a refund."""
    code, success = item["eventCode"], item.get("success") == "true"
    if code == "REFUND":
        status = "succeeded" if success else "failed"
    elif code == "REFUND_FAILED":
        status = "failed"
    elif code == "REFUNDED_REVERSED":
        status = "reversed"
    else:
        return None
    reason = None if status == "succeeded" else (item.get("reason") or code.lower())
    return GatewayEvent(f"{code}:{item['pspReference']}:{item.get('success')}", item.get("merchantReference"),
                        item["pspReference"], status, reason)


class AdyenGatewayAdapter:
    looks_up = False
    acknowledgement = Acknowledgement("[accepted]", "text/plain")

    def __init__(self, name: str, route: GatewayRoute) -> None:
        self.name = name
        self.merchant_account = route.merchant_account
        # The simulator's one extension of the refund request: which channel pays (a re-routed refund is no
        # longer the card's). Only the simulator gets it; Adyen's own API has no such field.
        self.sends_channel = route.simulator
        self.hmac_key = route.hmac_key.get_secret_value()
        self.base = route.base
        self.http = LazySession(route.timeout_seconds, {"X-API-Key": route.api_key.get_secret_value()})

    async def refund(self, order: RefundOrder) -> GatewayResult:
        body = {"merchantAccount": self.merchant_account, "reference": order.idempotency_key,
                "amount": {"value": order.amount_value, "currency": order.currency}}
        if self.sends_channel:
            body["channel"] = order.channel
        try:
            async with self.http.session.post(f"{self.base}/v71/payments/{order.payment_id}/refunds", json=body,
                                              headers={"Idempotency-Key": order.idempotency_key}) as response:
                status, raw = response.status, await response.read()
        except TimeoutError as error:
            raise GatewayError("adyen_http_timeout", retryable=True) from error
        except HTTP_ERRORS as error:
            raise GatewayError("adyen_http_connection", retryable=True) from error
        if not 200 <= status < 300:
            raise classify(status, raw)
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if answer.get("status") != "received" or not answer.get("pspReference"):
            raise GatewayError(f"adyen_unexpected_answer:{answer.get('status')}", retryable=False)
        return GatewayResult("pending", answer["pspReference"], None)

    async def lookup(self, idempotency_key: str, payment_id: str) -> GatewayResult | None:
        raise NotImplementedError("Adyen cannot be asked by key; outcomes arrive as notifications")

    async def close(self) -> None:
        await self.http.close()

    def events(self, payload: bytes, headers: Mapping[str, str]) -> list[GatewayEvent]:
        """Every item must be signed with our key and be for our merchant account, or none is taken."""
        try:
            items = [entry["NotificationRequestItem"] for entry in json.loads(payload)["notificationItems"]]
        except (ValueError, KeyError, TypeError) as error:
            raise WebhookRejected("payload") from error
        events = []
        for item in items:
            if not self._signed(item):
                raise WebhookRejected("signature")
            if item.get("merchantAccountCode") != self.merchant_account:
                raise WebhookRejected("merchant_account")
            try:
                event = notification_event(item)
            except (KeyError, TypeError) as error:
                raise WebhookRejected("payload") from error
            if event:
                events.append(event)
        return events

    def _signed(self, item: Mapping) -> bool:
        if not isinstance(item, dict) or not (item.get("additionalData") or {}).get("hmacSignature"):
            return False
        try:
            return bool(is_valid_hmac_notification(item, self.hmac_key))
        except (KeyError, TypeError, ValueError, binascii.Error):
            return False
