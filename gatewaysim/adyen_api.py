"""The Adyen-shaped API under /<account>: JSON bodies, X-API-Key auth, Adyen's objects and error shape.

Refunds answer `received`; their outcome always arrives by notification
(gatewaysim/webhooks.py). Settlement details reports are closed into batches
(gatewaysim/main.py) and downloaded with HTTP basic auth.
"""

import base64
import binascii
import hmac
import re
from dataclasses import dataclass

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gatewaysim import idempotency, ledger, objects, refunds, reports
from gatewaysim.settings import Account
from gatewaysim.web import Answer, ApiError, SimContext, context, fingerprint, pause
from shared.contract.money import currency_exponent

router = APIRouter()
_BATCH_FILE = re.compile(r"settlement_detail_report_batch_(\d+)\.csv")


def error(status: int, code: str, message: str, error_type: str = "validation") -> ApiError:
    return ApiError(Answer.of(status, {"status": status, "errorCode": code, "message": message,
                                       "errorType": error_type}))


@dataclass(frozen=True)
class Call:
    ctx: SimContext
    name: str
    account: Account


def _adyen(account: str, request: Request) -> tuple[SimContext, Account]:
    ctx = context(request)
    found = ctx.accounts.get(account)
    if found is None or found.personality != "adyen":
        raise error(404, "000", "Not found")
    return ctx, found


async def adyen_account(account: str, request: Request) -> Call:
    ctx, found = _adyen(account, request)
    given = request.headers.get("x-api-key", "")
    if not hmac.compare_digest(given.encode(), found.api_key.encode()):
        raise error(401, "000", "HTTP Status Response - Unauthorized", "security")
    await pause(ctx)
    return Call(ctx, account, found)


def _same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


async def report_user(account: str, request: Request) -> Call:
    ctx, found = _adyen(account, request)
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        user = password = ""
    if scheme.lower() != "basic" or not (_same_secret(user, found.report_user)
                                         and _same_secret(password, found.report_secret)):
        raise ApiError(Answer(401, b'{"status": 401, "errorCode": "000", "message": "Unauthorized"}'))
    return Call(ctx, account, found)


async def _json(request: Request) -> dict:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise error(400, "702", "Structure of request is invalid") from None
    if not isinstance(body, dict):
        raise error(400, "702", "Structure of request is invalid")
    return body


def _amount(body: dict) -> tuple[int, str]:
    amount = body.get("amount")
    if not isinstance(amount, dict) or type(amount.get("value")) is not int:
        raise error(422, "137", "Invalid amount specified")
    currency = str(amount.get("currency", ""))
    try:
        currency_exponent(currency)
    except (KeyError, ValueError):
        raise error(422, "137", "Invalid amount specified") from None
    return amount["value"], currency


def _refuse(kind: str) -> Answer:
    if kind == "in_use":
        return Answer.of(409, {"status": 409, "errorCode": "704", "errorType": "validation",
                               "message": "request already processed or in progress"})
    return Answer.of(400, {"status": 400, "errorCode": "000", "errorType": "validation",
                           "message": "Idempotency key reused with different request parameters"})


async def _idempotent(call: Call, request: Request, body: dict, work: idempotency.Work, *,
                      refuses_before_writing: bool = False) -> Answer:
    return await idempotency.run(call.ctx.pool, call.name, request.headers.get("idempotency-key"),
                                 fingerprint(request.method, request.url.path, body), work, _refuse,
                                 refuses_before_writing=refuses_before_writing)


@router.post("/{account}/sim/payments")
async def create_payment(request: Request, call: Call = Depends(adyen_account)) -> Response:
    """Simulator extension: a captured payment with the caller's pspReference."""
    body = await _json(request)
    psp = body.get("pspReference")
    value, currency = _amount(body)
    if not isinstance(psp, str) or not psp or value <= 0:
        raise error(422, "000", "pspReference and a positive amount are required")

    async def work(conn) -> Answer:
        payment, same = await ledger.create_payment(conn, call.name, psp, value, currency)
        if not same:
            raise error(400, "000", f"payment {psp} exists with another amount or currency")
        return Answer.of(200, objects.adyen_payment(payment, await ledger.refunded_value(conn, call.name, psp)))
    return (await _idempotent(call, request, body, work)).response()


@router.get("/{account}/v71/payments/{psp}")
async def read_payment(psp: str, call: Call = Depends(adyen_account)) -> Response:
    found = await ledger.payment_with_refunded(call.ctx.pool, call.name, psp)
    if found is None:
        raise error(404, "000", f"payment {psp} not found")
    return Answer.of(200, objects.adyen_payment(*found)).response()


@router.post("/{account}/v71/payments/{psp}/refunds")
async def create_refund(psp: str, request: Request, call: Call = Depends(adyen_account)) -> Response:
    body = await _json(request)
    value, currency = _amount(body)
    header_key = request.headers.get("idempotency-key")
    reference = body.get("reference")
    metadata = {"merchantAccount": body.get("merchantAccount") or call.account.merchant_account}
    metadata |= {"reference": reference} if reference else {}
    ask = refunds.RefundAsk(call.name, "adyen", psp, value, currency, header_key or reference,
                            str(body.get("channel") or "card"), metadata)
    if await refunds.unavailable(call.ctx, ask):
        raise error(503, "000", "Service unavailable (injected fault)", "internal")
    recorded = []

    async def work(conn) -> Answer:
        try:
            row, inserted = await refunds.create(conn, call.ctx, ask)
        except refunds.RefundRefused as refused:
            if refused.code == "unknown_payment":
                raise error(422, "167", "Original pspReference required for this operation") from None
            raise error(422, "137", "Invalid amount specified") from None
        if inserted:
            recorded.append(row)
        return Answer.of(201, objects.adyen_refund_answer(row))
    answer = await _idempotent(call, request, body, work, refuses_before_writing=True)  # refunds.create
    if answer.replayed:
        await ledger.count_call(call.ctx.pool, call.name, ask.idempotency_key)
    for row in recorded:
        await refunds.hold_if_lost(call.ctx, row)
    return answer.response()


@router.get("/{account}/reports/{filename}")
async def download_batch(filename: str, call: Call = Depends(report_user)) -> Response:
    """The Settlement details report of batch n; 404 until the batch is closed."""
    match = _BATCH_FILE.fullmatch(filename)
    if match is None:
        raise error(404, "000", "Not found")
    async with call.ctx.pool.acquire() as conn:
        lines = await ledger.lines_of_batch(conn, call.name, int(match.group(1)))
    if lines is None:
        raise error(404, "000", f"batch {match.group(1)} is not closed")
    return Response(reports.render("adyen", lines), media_type="text/csv")
