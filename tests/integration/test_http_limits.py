"""Public HTTP is limited: requests per API key / client answer 429 with Retry-After past the rate,
and a body over the size limit answers 413 — on the running services, over real HTTP."""

import uuid

import httpx
import pytest

from services.notify.signing import sign_link
from tests.integration.helpers import valid_request
from tests.integration.intake_http import auth, new_api_key
from tests.integration.service_fixtures import service_configured

pytestmark = pytest.mark.integration
LINK_SECRET = "limits-test-link-secret"


async def test_intake_limits_each_api_key_and_the_body_size(stack):
    with service_configured(stack, "intake", INTAKE_RATE_LIMIT="5/minute", MAX_REQUEST_BODY_BYTES="20000"):
        busy = await new_api_key(stack.dsn, f"shop-busy-{uuid.uuid4().hex[:6]}")
        calm = await new_api_key(stack.dsn, f"shop-calm-{uuid.uuid4().hex[:6]}")
        async with httpx.AsyncClient(base_url=stack.service_url("intake"), timeout=30) as intake:
            async def post(key, data):
                return await intake.post("/v1/refunds", json=data,
                                         headers={**auth(key), "Idempotency-Key": data["request_id"]})

            answers = [await post(busy, valid_request()) for _ in range(7)]
            assert [a.status_code for a in answers] == [202] * 5 + [429] * 2
            assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
            assert "5 per 1 minute" in answers[-1].json()["detail"]
            assert (await post(calm, valid_request())).status_code == 202  # another key has its own window

            big = valid_request(note="n" * 1000, items=[{"sku": "x" * 1000} for _ in range(30)])
            too_large = await post(calm, big)
            assert too_large.status_code == 413
            assert "over the limit of 20000 bytes" in too_large.json()["detail"]


async def test_notify_limits_the_tracking_api_per_key_and_the_customer_page_per_client(stack):
    keys = '{"key-a": "shop-a", "key-b": "shop-b"}'
    with service_configured(stack, "notify", TRACKING_API_KEYS=keys, TRACKING_RATE_LIMIT="3/minute",
                            CUSTOMER_PAGE_RATE_LIMIT="2/minute", CUSTOMER_LINK_SECRET=LINK_SECRET):
        async with httpx.AsyncClient(base_url=stack.service_url("notify"), timeout=30) as notify:
            codes = [(await notify.get("/v1/refunds/rf_none", headers={"Authorization": "Bearer key-a"})).status_code
                     for _ in range(4)]
            assert codes == [404, 404, 404, 429]
            assert (await notify.get("/v1/refunds/rf_none", headers={"Authorization": "Bearer key-b"})).status_code == 404

            link = sign_link(LINK_SECRET, "rf_" + "0" * 32, 2**40)
            pages = [await notify.get(f"/r/{link}") for _ in range(3)]
            assert [p.status_code for p in pages] == [404, 404, 429]
            assert int(pages[-1].headers["Retry-After"]) >= 1
