"""The console's only way to the services: one function per endpoint of docs' agreed API shapes.

Every call carries the signed-in person's bearer token, so each service decides on its own what they may
see and do. A call ends in its JSON, a `ServiceError` (the service answered 4xx/5xx: its message is shown
to the person) or `Unavailable` (no answer, or the service has no such endpoint yet: FastAPI's bare
"Not Found"). Shape differences between service versions are smoothed here and nowhere else.
"""

import time
from typing import Any
from urllib.parse import quote

import httpx
from prometheus_client import Histogram

SERVICES = ("intake", "approval", "payout", "reconcile", "notify")
CALLS = Histogram("console_service_call_seconds", "Calls the console made to a service, by endpoint and outcome",
                  ["service", "endpoint", "outcome"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
MAX_MESSAGE = 500


class ServiceError(Exception):
    """The service answered with an error: its status and its own (specific) message."""

    def __init__(self, service: str, status: int, message: str) -> None:
        super().__init__(f"{service}: {status} {message}")
        self.service, self.status, self.message = service, status, message


class Unavailable(Exception):
    """The service did not answer, or has no such endpoint (not deployed in this version)."""

    def __init__(self, service: str, why: str) -> None:
        super().__init__(f"{service}: {why}")
        self.service, self.why = service, why


def message_of(response: httpx.Response) -> str:
    """The service's error text, safe to show: `detail` as a string, a {code, message} object's message,
    or a validation error's field paths and messages; control characters dropped, at most 500 characters."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text or response.reason_phrase
    if isinstance(detail, dict):
        detail = detail.get("message") or detail.get("detail") or str(detail)
    elif isinstance(detail, list):
        detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:]) or 'body'}: {e.get('msg', '')}"
                           if isinstance(e, dict) else str(e) for e in detail)
    return safe_text(str(detail))


def safe_text(text: str) -> str:
    """Text from elsewhere, fit to show: printable characters only, at most 500 (the page escapes it)."""
    text = "".join(ch for ch in text if ch.isprintable())
    return text[:MAX_MESSAGE] + ("…" if len(text) > MAX_MESSAGE else "")


class Services:
    """Base URLs and a shared HTTP client; `call` is the one place a request is made."""

    def __init__(self, urls: dict[str, str], timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None):
        self.urls = {name: url.rstrip("/") for name, url in urls.items()}
        self.http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def close(self) -> None:
        await self.http.aclose()

    async def call(self, token: str, service: str, method: str, path: str, endpoint: str, *,
                   params: dict | None = None, json: dict | None = None) -> Any:
        started, outcome = time.monotonic(), "ok"
        try:
            try:
                response = await self.http.request(
                    method, self.urls[service] + path, json=json,
                    params={k: v for k, v in (params or {}).items() if v not in (None, "")},
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
            except httpx.HTTPError as exc:
                outcome = "unavailable"
                raise Unavailable(service, f"no answer ({type(exc).__name__})") from None
            if response.status_code in (404, 405) and _no_such_route(response):
                outcome = "unavailable"
                raise Unavailable(service, f"{method} {endpoint} is not available from {service}")
            if response.status_code >= 400:
                outcome = str(response.status_code)
                raise ServiceError(service, response.status_code, message_of(response))
            return response.json()
        finally:
            CALLS.labels(service, endpoint, outcome).observe(time.monotonic() - started)


def _no_such_route(response: httpx.Response) -> bool:
    try:
        return response.json().get("detail") in ("Not Found", "Method Not Allowed")
    except (ValueError, AttributeError):
        return True


def _seg(value: object) -> str:
    """One path segment: an id from a form or URL can never reach another path of the service."""
    text = quote(str(value), safe="")
    if text in ("", ".", ".."):
        raise ServiceError("console", 400, f"not an id: {value!r}")
    return text


def _list(answer: Any, *keys: str) -> list:
    """A list answer, whether bare or wrapped under one of `keys` (service versions differ)."""
    if isinstance(answer, list):
        return answer
    for key in keys:
        if isinstance(answer, dict) and key in answer:
            return answer[key]
    return []


# ------------------------------------------------------------------------------------------ approval
async def list_reviews(s: Services, token: str, **filters) -> list[dict]:
    """GET /v1/reviews?kind=&channel=&region=&rule=&min_amount=&max_amount=&currency=&state= (oldest first)."""
    return _list(await s.call(token, "approval", "GET", "/v1/reviews", "/v1/reviews", params=filters),
                 "reviews", "items")


async def get_review(s: Services, token: str, refund_id: str) -> dict:
    return await s.call(token, "approval", "GET", f"/v1/reviews/{_seg(refund_id)}", "/v1/reviews/{id}")


async def decide_review(s: Services, token: str, refund_id: str, action: str, reason: str) -> dict:
    return await s.call(token, "approval", "POST", f"/v1/reviews/{_seg(refund_id)}/decision",
                        "/v1/reviews/{id}/decision", json={"action": action, "reason": reason})


async def reopen_review(s: Services, token: str, refund_id: str, reason: str) -> dict:
    return await s.call(token, "approval", "POST", f"/v1/reviews/{_seg(refund_id)}/reopen", "/v1/reviews/{id}/reopen",
                        json={"reason": reason})


# -------------------------------------------------------------------------------------------- payout
async def get_payout(s: Services, token: str, refund_id: str) -> dict:
    return await s.call(token, "payout", "GET", f"/v1/payouts/{_seg(refund_id)}", "/v1/payouts/{id}")


async def failed_payouts(s: Services, token: str) -> list[dict]:
    return _list(await s.call(token, "payout", "GET", "/v1/payouts", "/v1/payouts", params={"status": "failed"}),
                 "payouts")


async def request_exit(s: Services, token: str, refund_id: str, body: dict) -> dict:
    """body: {"exit": "reroute", "gateway", "reason"} or {"exit": "paid_outside", "reference", "evidence", "reason"}."""
    return await s.call(token, "payout", "POST", f"/v1/payouts/{_seg(refund_id)}/exits", "/v1/payouts/{id}/exits",
                        json=body)


# ----------------------------------------------------------------------------------------- reconcile
async def discrepancies(s: Services, token: str, state: str = "open", category: str | None = None) -> list[dict]:
    # `status` is what reconcile called the filter before `state`; sending both reaches either version.
    return _list(await s.call(token, "reconcile", "GET", "/v1/discrepancies", "/v1/discrepancies",
                              params={"state": state, "status": state, "category": category}), "discrepancies")


async def resolve_discrepancy(s: Services, token: str, discrepancy_id: int | str, reason: str) -> dict:
    return await s.call(token, "reconcile", "POST", f"/v1/discrepancies/{_seg(discrepancy_id)}/resolve",
                        "/v1/discrepancies/{id}/resolve", json={"reason": reason})


async def ledger(s: Services, token: str) -> list[dict]:
    """Per currency {currency, paid, matched, open, balanced}; an older reconcile's entries are mapped onto it."""
    rows = _list(await s.call(token, "reconcile", "GET", "/v1/ledger", "/v1/ledger"), "currencies")
    out = []
    for row in rows:
        if "matched" not in row and "matched_settled" in row:
            row = dict(row, matched=row["matched_settled"],
                       open=row.get("paid", 0) - row["matched_settled"],
                       balanced=row.get("imbalance", 0) == 0)
        out.append(row)
    return out


async def settlement(s: Services, token: str, refund_id: str) -> dict:
    return await s.call(token, "reconcile", "GET", f"/v1/refunds/{_seg(refund_id)}/settlement",
                        "/v1/refunds/{id}/settlement")


# -------------------------------------------------------------------------------------------- notify
async def search_tickets(s: Services, token: str, q: str) -> list[dict]:
    return _list(await s.call(token, "notify", "GET", "/v1/tickets", "/v1/tickets", params={"q": q}), "tickets")


async def get_ticket(s: Services, token: str, refund_id: str) -> dict:
    return await s.call(token, "notify", "GET", f"/v1/tickets/{_seg(refund_id)}", "/v1/tickets/{id}")


async def tracking(s: Services, token: str, refund_id: str) -> dict:
    """The public tracking view (older notify versions have no /v1/tickets)."""
    return await s.call(token, "notify", "GET", f"/v1/refunds/{_seg(refund_id)}", "/v1/refunds/{id}")


# --------------------------------------------------------------------------------- every service
async def dead_letters(s: Services, token: str, service: str, state: str = "open") -> dict:
    return await s.call(token, service, "GET", "/v1/dead-letters", "/v1/dead-letters", params={"state": state})


async def handle_dead_letter(s: Services, token: str, service: str, dead_letter_id: str, action: str,
                             reason: str) -> dict:
    if action not in ("replay", "discard"):
        raise ValueError(action)
    return await s.call(token, service, "POST", f"/v1/dead-letters/{_seg(dead_letter_id)}/{action}",
                        f"/v1/dead-letters/{{id}}/{action}", json={"reason": reason})


async def breaker(s: Services, token: str, service: str) -> dict:
    return await s.call(token, service, "GET", "/v1/dead-letters/breaker", "/v1/dead-letters/breaker")


async def close_breaker(s: Services, token: str, service: str, reason: str) -> dict:
    return await s.call(token, service, "POST", "/v1/dead-letters/breaker/close", "/v1/dead-letters/breaker/close",
                        json={"reason": reason})
