"""The Stripe-shaped API under /<account>/v1: form bodies, Bearer auth, Stripe's objects, errors and idempotency.

Reached with the official `stripe` package as
`StripeClient(api_key, base_addresses={"api": "http://<sim>/<account>"})`.
"""

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gatewaysim import idempotency, ledger, objects, refunds, reports
from gatewaysim.settings import Account
from gatewaysim.web import Answer, ApiError, SimContext, context, decode_form, fingerprint, pause
from shared.contract.money import currency_exponent

router = APIRouter()
REPORT_TYPE = "balance_change_from_activity.itemized.1"
_DATA_LAG = timedelta(seconds=2)  # how far behind now a report's data is complete


def error(status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None,
          param: str | None = None) -> ApiError:
    body = {"type": type_, "message": message}
    body |= {"code": code} if code else {}
    body |= {"param": param} if param else {}
    return ApiError(Answer.of(status, {"error": body}))


@dataclass(frozen=True)
class Call:
    ctx: SimContext
    name: str
    account: Account


async def stripe_account(account: str, request: Request) -> Call:
    ctx = context(request)
    found = ctx.accounts.get(account)
    if found is None or found.personality != "stripe":
        raise error(404, f"Unrecognized request URL ({request.method}: {request.url.path}).")
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {found.api_key}".encode()):
        raise error(401, "Invalid API Key provided.")
    await pause(ctx)
    return Call(ctx, account, found)


def _int(params: dict, name: str, *, required: bool = False) -> int | None:
    text = params.get(name)
    if text is None:
        if required:
            raise error(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
        return None
    try:
        return int(text)
    except (TypeError, ValueError):
        raise error(400, f"Invalid integer: {text}", code="parameter_invalid_integer", param=name) from None


def _refuse(kind: str) -> Answer:
    if kind == "in_use":
        return Answer.of(409, {"error": {"type": "idempotency_error", "code": "idempotency_key_in_use",
                                         "message": "There is currently another in-progress request using this "
                                                    "Idempotent Key (that probably means you submitted twice, and "
                                                    "the other request is still going through). Please try again "
                                                    "later."}})
    return Answer.of(400, {"error": {"type": "idempotency_error",
                                     "message": "Keys for idempotent requests can only be used with the same "
                                                "parameters they were first used with. Try using a key other than "
                                                "the one used in the original request."}})


async def _idempotent(call: Call, request: Request, params: dict, work: idempotency.Work, *,
                      refuses_before_writing: bool = False) -> Answer:
    return await idempotency.run(call.ctx.pool, call.name, request.headers.get("idempotency-key"),
                                 fingerprint(request.method, request.url.path, params), work, _refuse,
                                 refuses_before_writing=refuses_before_writing)


def _respond(request: Request, answer: Answer) -> Response:
    key = request.headers.get("idempotency-key")
    return answer.response({"Request-Id": "req_" + secrets.token_hex(7)} | ({"Idempotency-Key": key} if key else {}))


@router.post("/{account}/v1/payment_intents")
async def create_payment_intent(request: Request, call: Call = Depends(stripe_account)) -> Response:
    """Simulator extension: the caller picks the id; the payment is captured at once (`confirm=true`)."""
    params = decode_form(await request.body())
    amount = _int(params, "amount", required=True)
    currency = str(params.get("currency", "")).upper()
    try:
        currency_exponent(currency)
    except (KeyError, ValueError):
        raise error(400, f"Invalid currency: {currency.lower()}", param="currency") from None
    if amount <= 0:
        raise error(400, "This value must be greater than or equal to 1.", param="amount")
    payment_id = params.get("id") or "pi_" + secrets.token_hex(12)

    async def work(conn) -> Answer:
        payment, same = await ledger.create_payment(conn, call.name, payment_id, amount, currency)
        if not same:
            raise error(400, f"PaymentIntent {payment_id} exists with another amount or currency.", param="id",
                        code="resource_already_exists")
        refunded = await ledger.refunded_value(conn, call.name, payment_id)
        return Answer.of(200, objects.stripe_payment_intent(payment, refunded))
    return _respond(request, await _idempotent(call, request, params, work))


@router.get("/{account}/v1/payment_intents/{payment_id}")
async def read_payment_intent(payment_id: str, call: Call = Depends(stripe_account)) -> Response:
    found = await ledger.payment_with_refunded(call.ctx.pool, call.name, payment_id)
    if found is None:
        raise error(404, f"No such payment_intent: '{payment_id}'", code="resource_missing", param="intent")
    return Answer.of(200, objects.stripe_payment_intent(*found)).response()


_REFUSED = {
    "unknown_payment": (404, "resource_missing"),
    "currency_mismatch": (400, "parameter_invalid"),
    "invalid_amount": (400, "parameter_invalid_integer"),
    "nothing_left": (400, "charge_already_refunded"),
    "amount_too_large": (400, "amount_too_large"),
}


@router.post("/{account}/v1/refunds")
async def create_refund(request: Request, call: Call = Depends(stripe_account)) -> Response:
    params = decode_form(await request.body())
    payment_ref = params.get("payment_intent") or params.get("charge")
    if not payment_ref:
        raise error(400, "One of the following params should be provided for this request: payment_intent or "
                         "charge.", code="parameter_missing")
    metadata = params.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise error(400, "Invalid object", param="metadata")
    header_key = request.headers.get("idempotency-key")
    ask = refunds.RefundAsk(call.name, "stripe", payment_ref, _int(params, "amount"), None,
                            header_key or metadata.get("refund_key"), metadata.get("channel", "card"), metadata)
    if await refunds.unavailable(call.ctx, ask):
        raise error(503, "The gateway simulator is unavailable (injected fault).", type_="api_error")
    recorded = []

    async def work(conn) -> Answer:
        try:
            row, inserted = await refunds.create(conn, call.ctx, ask)
        except refunds.RefundRefused as refused:
            status, code = _REFUSED[refused.code]
            param = "payment_intent" if refused.code == "unknown_payment" else "amount"
            raise error(status, refused.detail or code, code=code, param=param) from None
        if inserted:
            recorded.append(row)
        return Answer.of(200, objects.stripe_refund(row))
    answer = await _idempotent(call, request, params, work, refuses_before_writing=True)  # refunds.create
    if answer.replayed and header_key:
        await ledger.count_call(call.ctx.pool, call.name, ask.idempotency_key)
    for row in recorded:
        await refunds.hold_if_lost(call.ctx, row)
    return _respond(request, answer)


@router.get("/{account}/v1/refunds/{refund_id}")
async def read_refund(refund_id: str, call: Call = Depends(stripe_account)) -> Response:
    row = await ledger.look_up_refund(call.ctx.pool, call.name, refund_id)
    if row is None:
        raise error(404, f"No such refund: '{refund_id}'", code="resource_missing", param="id")
    return Answer.of(200, objects.stripe_refund(row)).response()


@router.get("/{account}/v1/refunds")
async def list_refunds(request: Request, call: Call = Depends(stripe_account)) -> Response:
    query = dict(request.query_params)
    limit = _int(query, "limit") or 10
    if not 1 <= limit <= 100:
        raise error(400, "This value must be between 1 and 100.", param="limit")
    payment_id = query.get("payment_intent")
    if payment_id is None and query.get("charge"):
        payment = await ledger.find_payment(call.ctx.pool, call.name, query["charge"])
        payment_id = payment["id"] if payment else query["charge"]
    page = await ledger.list_refunds(call.ctx.pool, call.name, payment_id, limit, query.get("starting_after"))
    if page is None:
        raise error(400, f"No such refund: '{query['starting_after']}'", code="resource_missing",
                    param="starting_after")
    rows, has_more = page
    return Answer.of(200, {"object": "list", "data": [objects.stripe_refund(r) for r in rows],
                           "has_more": has_more, "url": "/v1/refunds"}).response()


def _whole_seconds(moment: datetime) -> int:
    return int(moment.timestamp())


async def _data_available(call: Call) -> tuple[int, int]:
    end = _whole_seconds(datetime.now(UTC) - _DATA_LAG)
    async with call.ctx.pool.acquire() as conn:
        first = await ledger.first_line_at(conn, call.name)
    return (min(_whole_seconds(first), end) if first else end), end


@router.get("/{account}/v1/reporting/report_types/{report_type}")
async def read_report_type(report_type: str, call: Call = Depends(stripe_account)) -> Response:
    if report_type != REPORT_TYPE:
        raise error(404, f"No such report type: '{report_type}'", code="resource_missing", param="id")
    start, end = await _data_available(call)
    return Answer.of(200, {"id": REPORT_TYPE, "object": "reporting.report_type", "name": "Itemized balance change",
                           "data_available_start": start, "data_available_end": end, "updated": end,
                           "default_columns": reports.STRIPE_COLUMNS, "version": 1, "livemode": False}).response()


def _report_run(row, base: str) -> dict:
    created = objects.unix(row["created_at"])
    return {"id": row["id"], "object": "reporting.report_run", "created": created, "livemode": False,
            "report_type": row["report_type"], "status": "succeeded", "succeeded_at": created, "error": None,
            "parameters": {"interval_start": objects.unix(row["interval_start"]),
                           "interval_end": objects.unix(row["interval_end"])},
            "result": {"id": row["file_id"], "object": "file", "created": created, "purpose": "finance_report_run",
                       "filename": f"{row['file_id']}.csv", "size": len(row["content"].encode()), "type": "csv",
                       "url": f"{base}/v1/files/{row['file_id']}/contents"}}


def _base(request: Request, account: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/{account}"


@router.post("/{account}/v1/reporting/report_runs")
async def create_report_run(request: Request, call: Call = Depends(stripe_account)) -> Response:
    """The run succeeds at once: its file is the lines created in [interval_start, interval_end)."""
    params = decode_form(await request.body())
    if params.get("report_type") != REPORT_TYPE:
        raise error(400, f"Unknown report type; this gateway has {REPORT_TYPE}.", param="report_type")
    interval = params.get("parameters") or {}
    available_start, available_end = await _data_available(call)
    start = _int(interval, "interval_start")
    end = _int(interval, "interval_end")
    start = available_start if start is None else start
    end = available_end if end is None else end
    if end > available_end:
        raise error(400, f"parameters[interval_end] must be at most data_available_end ({available_end}).",
                    param="parameters[interval_end]")
    if not 0 <= start < end:
        raise error(400, "parameters[interval_start] must be before parameters[interval_end].",
                    param="parameters[interval_start]")

    async def work(conn) -> Answer:
        since, until = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
        content = reports.render("stripe", await ledger.lines_between(conn, call.name, since, until))
        row = await conn.fetchrow(
            "INSERT INTO gateway_sim.report_runs (account, id, file_id, report_type, interval_start, interval_end, "
            "content) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *", call.name, "frr_" + secrets.token_hex(12),
            "file_" + secrets.token_hex(12), REPORT_TYPE, since, until, content)
        return Answer.of(200, _report_run(row, _base(request, call.name)))
    return _respond(request, await _idempotent(call, request, params, work))


@router.get("/{account}/v1/reporting/report_runs/{run_id}")
async def read_report_run(run_id: str, request: Request, call: Call = Depends(stripe_account)) -> Response:
    row = await call.ctx.pool.fetchrow("SELECT * FROM gateway_sim.report_runs WHERE account = $1 AND id = $2",
                                       call.name, run_id)
    if row is None:
        raise error(404, f"No such report run: '{run_id}'", code="resource_missing", param="id")
    return Answer.of(200, _report_run(row, _base(request, call.name))).response()


@router.get("/{account}/v1/files/{file_id}/contents")
async def download_file(file_id: str, call: Call = Depends(stripe_account)) -> Response:
    content = await call.ctx.pool.fetchval(
        "SELECT content FROM gateway_sim.report_runs WHERE account = $1 AND file_id = $2", call.name, file_id)
    if content is None:
        raise error(404, f"No such file upload: '{file_id}'", code="resource_missing", param="file")
    return Response(content, media_type="text/csv")
