"""`POST /v1/refunds`: the way in for platforms without Kafka.

Auth: an API key per source (`Authorization: Bearer <key>` or `X-Api-Key`); the
refund's source is the key's. Idempotency as payments engineers know it from
Stripe: the `Idempotency-Key` header is the request_id; the same key with the same
body gets the very same status and body again (and the stored outcome event is
published again, as for a Kafka duplicate); the same key with another body is a
422 `idempotency_key_reused`; concurrent requests with one key serialise on an
advisory lock and make one refund.
"""

from datetime import UTC, datetime
from typing import Annotated, Literal

import asyncpg
import orjson
import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Security
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from services.intake import credentials, domain, store
from services.intake.handlers import Decision, Intake
from shared.contract.events import FieldError, RefundRequested
from shared.runtime.http_limits import RateLimit
from shared.contract.ids import refund_id_for
from shared.runtime.stage import Stage

log = structlog.get_logger()
_bearer = HTTPBearer(auto_error=False, description="The platform's API key as a bearer token")
_api_key = APIKeyHeader(name="X-Api-Key", auto_error=False, description="The platform's API key")


class RefundAcceptedBody(BaseModel):
    """202: the refund is accepted and its ticket opened, with each stage's due time."""

    refund_id: str
    status: Literal["accepted"]
    deadlines: dict[str, datetime] | None = None


class RefundRejectedBody(BaseModel):
    """422: every problem at once. `status` is `rejected` when the request was rejected as a refund
    (and published as `refund.rejected.v1`); it is null for `idempotency_key_reused`."""

    refund_id: str | None = None
    status: Literal["rejected"] | None = None
    errors: list[FieldError]


class Problem(BaseModel):
    """400/401: what is wrong with the call itself."""

    detail: str


_KEY_HELP = "Required (else 400): the request_id, 1-128 chars; one refund per (source, key) forever"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="refunds"'})


def refunds_router(intake: Intake, stage: Stage, rate_limit: RateLimit) -> APIRouter:
    """The routes, bound to the intake decision and the stage whose pool and outbox they use;
    `rate_limit` counts each API key's requests."""
    router = APIRouter(tags=["refunds"])

    async def platform_source(bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
                              api_key: Annotated[str | None, Security(_api_key)]) -> str:
        key = api_key or (bearer.credentials if bearer else None)
        if not key:
            raise _unauthorized("an API key is required: send Authorization: Bearer <key> or X-Api-Key: <key>")
        async with stage.pool.acquire() as conn:
            source = await store.source_of_key(conn, key)
        if source is None:
            raise _unauthorized("the API key is unknown, revoked or expired")
        await rate_limit.check(credentials.hash_key(key))
        return source

    @router.post(
        "/v1/refunds", status_code=202, response_model=RefundAcceptedBody,
        summary="Request a refund (the data of refund.requested.v1)",
        responses={
            400: {"model": Problem, "description": "No or bad Idempotency-Key, or a body that is not JSON"},
            401: {"model": Problem, "description": "No API key, or an unknown, revoked or expired one"},
            413: {"model": Problem, "description": "The body is over MAX_REQUEST_BODY_BYTES"},
            429: {"model": Problem, "description": "Over the API key's rate (INTAKE_RATE_LIMIT); see Retry-After"},
            422: {"model": RefundRejectedBody,
                  "description": "Rejected (every contract rule broken, incl. exceeds_refundable), "
                                 "or idempotency_key_reused"},
        },
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/RefundRequested"}}}}},
    )
    async def create_refund(
        request: Request,
        source: Annotated[str, Depends(platform_source)],
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", description=_KEY_HELP)] = None,
    ) -> JSONResponse:
        received_at = datetime.now(UTC)
        if not idempotency_key or len(idempotency_key) > 128:
            raise HTTPException(400, "the Idempotency-Key header is required: 1-128 characters, the request_id")
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError as error:
            raise HTTPException(400, f"the body is not JSON: {error}") from None
        errors = domain.key_mismatch_errors(data, idempotency_key)
        if isinstance(data, dict) and "request_id" not in data:
            data = {**data, "request_id": idempotency_key}
        decision = await _decide(intake, stage, source=source, request_id=idempotency_key, data=data,
                                 received_at=received_at, errors=errors)
        return _response(decision, refund_id_for(source, idempotency_key))

    return router


async def _decide(intake: Intake, stage: Stage, *, source: str, request_id: str, **request) -> Decision:
    # A Kafka consumer does not take the advisory lock; if it saves the same refund
    # first, our ticket insert violates the key: run again and read its outcome.
    for attempt in (1, 2):
        try:
            async with stage.unit_of_work() as uow:
                await uow.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                                       refund_id_for(source, request_id))
                decision = await intake.decide_request(uow.conn, source=source, request_id=request_id,
                                                       event_type=domain.REQUESTED_TYPE, **request)
                if not decision.reused_key:
                    uow.emit(decision.event)
            return decision
        except asyncpg.UniqueViolationError:
            if attempt == 2:
                raise
            log.info("ticket_saved_concurrently_reading_it", source=source, request_id=request_id)
    raise AssertionError("unreachable")


def _response(decision: Decision, refund_id: str) -> JSONResponse:
    """The HTTP answer, read from the outcome event: the same event always gives the same answer."""
    replayed = {"Idempotent-Replayed": "true"} if decision.outcome == "duplicate" else {}
    if decision.reused_key:
        reused = FieldError(field="Idempotency-Key", code="idempotency_key_reused",
                            message="this Idempotency-Key was first used with a different body; "
                                    "a new refund needs a new key")
        body = RefundRejectedBody(refund_id=refund_id, errors=[reused])
        return JSONResponse(body.model_dump(mode="json"), status_code=422)
    event = orjson.loads(decision.event.value)
    data = event["data"]
    if event["type"] == "refund.accepted.v1":
        body = {"refund_id": data["refund_id"], "status": "accepted", "deadlines": data.get("deadlines")}
        return JSONResponse(body, status_code=202, headers=replayed)
    body = {"refund_id": data["refund_id"], "status": "rejected", "errors": data["errors"]}
    return JSONResponse(body, status_code=422, headers=replayed)


def publish_request_schema(app: FastAPI) -> None:
    """Put the RefundRequested model in the app's OpenAPI components.

    The route reads its body itself (so a bad body becomes a contract rejection,
    not FastAPI's own 422), hence FastAPI cannot see the model there.
    """

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            model = RefundRequested.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(model.pop("$defs", {}))
            components["RefundRequested"] = model
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
