"""Payout's HTTP API: the gateways' signed webhooks, `POST /v1/gateway-events/{gateway}`.

400: not the gateway's (bad or missing signature, a timestamp outside the window,
an item for another merchant account, unreadable): nothing is recorded. 404: no
route by that name. 200 with the gateway's acknowledgement otherwise, replays too
(a replayed event id changes nothing), so the gateway stops re-sending.
"""

from collections.abc import Mapping

import structlog
from fastapi import APIRouter, HTTPException, Request, Response

from services.payout.gateway import Gateway, WebhookRejected
from services.payout.webhooks import WEBHOOKS, GatewayEventReceiver

log = structlog.get_logger()


def gateway_events_router(gateways: Mapping[str, Gateway], receiver: GatewayEventReceiver) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/gateway-events/{gateway}", responses={400: {"description": "not signed by the gateway"},
                                                          404: {"description": "no route by that name"}})
    async def gateway_event(gateway: str, request: Request) -> Response:
        """A gateway's webhook: verified, recorded under its event ids, applied once."""
        adapter = gateways.get(gateway)
        if adapter is None:
            raise HTTPException(404, f"no gateway route named {gateway!r}")
        payload = await request.body()
        try:
            events = adapter.events(payload, request.headers)
        except WebhookRejected as rejected:
            WEBHOOKS.labels(gateway, f"rejected_{rejected.reason}").inc()
            log.warning("gateway_webhook_rejected", gateway=gateway, reason=rejected.reason)
            raise HTTPException(400, f"webhook rejected: {rejected.reason}") from rejected
        fresh = await receiver.receive(gateway, events) if events else 0
        WEBHOOKS.labels(gateway, "accepted" if fresh else "replayed" if events else "no_outcome").inc()
        return Response(adapter.acknowledgement.body, media_type=adapter.acknowledgement.media_type)

    return router
