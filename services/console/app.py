"""The console's pages: FastAPI routes rendering Jinja2 templates over the services' APIs (clients.py).

Every page needs a signed-in person; every POST form carries the session's CSRF token and a reason, and
ends in a redirect back (303) with the service's answer shown as a notice: its own message on failure.
"""

import asyncio
import contextlib
import os
import time
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest
from starlette.middleware.sessions import SessionMiddleware

from services.console import auth, clients, i18n
from services.console.clients import ServiceError, Services, Unavailable
from services.console.settings import ConsoleSettings
from shared.contract.money import currency_exponent, major_units_text
from shared.runtime.logs import configure_logging

log = structlog.get_logger()
HERE = Path(__file__).resolve().parent
PAGES = Counter("console_page_views_total", "Console pages rendered, by page and HTTP status", ["page", "status"])
ACTIONS = Counter("console_staff_actions_total", "Staff actions sent through the console, by action and outcome "
                  "(ok, refused = the service said no, unavailable, csrf)", ["action", "outcome"])
SIGN_INS = Counter("console_sign_ins_total", "Sign-in attempts, by method and outcome", ["method", "outcome"])
REASON_MAX = 500
KINDS = ("review", "hold")
DISCREPANCY_CATEGORIES = ("missing_in_report", "missing_internally", "amount_mismatch", "currency_mismatch",
                          "duplicate", "reversed", "fee_mismatch", "paid_outside")
DEAD_LETTER_STATES = ("open", "replayed", "discarded")


def create_app(settings: ConsoleSettings) -> FastAPI:
    services = Services(settings.service_urls, timeout=settings.service_timeout_seconds)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(money=money, when=when)
    state = {"ready": False}
    oauth = _oauth(settings) if settings.oidc_enabled else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        configure_logging(settings.service_name, settings.log_level)
        state["ready"] = True
        log.info("service_started", port=settings.http_port, oidc=settings.oidc_enabled,
                 local_sign_in=settings.local_sign_in)
        try:
            yield
        finally:
            state["ready"] = False
            await services.close()

    app = FastAPI(title="Refund operations console", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(SessionMiddleware, secret_key=settings.session_secret, session_cookie="console_session",
                       max_age=settings.session_max_age_seconds, same_site="lax",
                       https_only=settings.session_https_only)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    # ---------------------------------------------------------------------------------- rendering
    def render(request: Request, template: str, page: str, status: int = 200, **context: Any) -> HTMLResponse:
        lang = i18n.language(request)
        translate = i18n.translator(lang)
        person = auth.current(request)
        PAGES.labels(page, str(status)).inc()
        return templates.TemplateResponse(request, template, status_code=status, context={
            "_": translate, "lang": lang, "languages": i18n.LANGUAGES, "person": person, "page": page,
            "csrf": auth.csrf_token(request), "notices": request.session.pop("notices", []),
            "time_left": lambda seconds: time_left(translate, seconds), "path": request.url.path,
            "roles": lambda names: ", ".join(translate(str(name)) for name in names or []),
            "query": request.url.query, **context})

    def notice(request: Request, kind: str, text: str) -> None:
        request.session.setdefault("notices", []).append({"kind": kind, "text": text})

    def to_sign_in(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={quote(target)}", status_code=303)

    async def act(request: Request, action: str, csrf: str, reason: str | None, call, done: str) -> None:
        """Send one staff action (after the CSRF and reason checks) and leave its outcome as a notice."""
        translate = i18n.translator(i18n.language(request))
        if not auth.csrf_ok(request, csrf):
            ACTIONS.labels(action, "csrf").inc()
            notice(request, "error", translate("The form expired; please try again."))
            return
        if reason is not None and not reason.strip():
            ACTIONS.labels(action, "refused").inc()
            notice(request, "error", translate("A reason is required."))
            return
        try:
            await call()
        except ServiceError as error:
            ACTIONS.labels(action, "refused").inc()
            notice(request, "error", translate("{service} refused ({status}): {message}", service=error.service,
                                               status=error.status, message=error.message))
            return
        except Unavailable as missing:
            ACTIONS.labels(action, "unavailable").inc()
            notice(request, "error", translate("Not available from {service}.", service=missing.service))
            return
        ACTIONS.labels(action, "ok").inc()
        log.info("staff_action", action=action, actor=auth.current(request).user_id)
        notice(request, "ok", done)

    def back(request: Request, default: str) -> RedirectResponse:
        return RedirectResponse(back_target(request.headers.get("referer"), str(request.base_url), default),
                                status_code=303)

    # ---------------------------------------------------------------------- health and metrics
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(response: Response) -> dict:
        # The console is ready when it serves; a service being down shows on the pages, not here.
        ok = state["ready"]
        response.status_code = 200 if ok else 503
        return {"status": "ready" if ok else "not_ready", "checks": {"started": ok}, "pid": os.getpid()}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    # ---------------------------------------------------------------------------------- language
    @app.get("/lang")
    async def set_language(request: Request, to: str, next: str = "/") -> RedirectResponse:
        if to in i18n.LANGUAGES:
            request.session["lang"] = to
        return RedirectResponse(_safe_next(next, "/"), status_code=303)

    # ---------------------------------------------------------------------------------- sign-in
    @app.get("/signin", response_class=HTMLResponse)
    async def sign_in_page(request: Request, next: str = "/queue") -> HTMLResponse:
        return render(request, "signin.html", "signin", next=_safe_next(next), local=settings.local_sign_in,
                      oidc=settings.oidc_enabled, demo_users=auth.DEMO_USERS)

    @app.post("/signin/local")
    async def sign_in_local(request: Request, user: str = Form(...), password: str = Form(...),
                            csrf: str = Form(""), next: str = Form("/queue")):
        translate = i18n.translator(i18n.language(request))
        if not settings.local_sign_in:
            SIGN_INS.labels("local", "disabled").inc()
            return render(request, "signin.html", "signin", 403, next=_safe_next(next), local=False,
                          oidc=settings.oidc_enabled, demo_users={},
                          error=translate("Local sign-in is only available in a local environment."))
        person = auth.local_person(settings.staff_token_secret, settings.demo_password, user.strip(), password) \
            if auth.csrf_ok(request, csrf) else None
        if person is None:
            SIGN_INS.labels("local", "refused").inc()
            return render(request, "signin.html", "signin", 401, next=_safe_next(next), local=True,
                          oidc=settings.oidc_enabled, demo_users=auth.DEMO_USERS,
                          error=translate("Unknown user or wrong password."))
        auth.sign_in(request, person)
        SIGN_INS.labels("local", "ok").inc()
        log.info("signed_in", user=person.user_id, via="local")
        return RedirectResponse(_safe_next(next), status_code=303)

    @app.get("/signin/oidc")
    async def sign_in_oidc(request: Request, next: str = "/queue"):
        if oauth is None:
            return RedirectResponse("/signin", status_code=303)
        request.session["next"] = _safe_next(next)
        redirect_uri = (settings.public_url.rstrip("/") + "/auth/callback") if settings.public_url \
            else str(request.url_for("oidc_callback"))
        return await oauth.idp.authorize_redirect(request, redirect_uri)

    @app.get("/auth/callback", name="oidc_callback")
    async def oidc_callback(request: Request):
        from authlib.integrations.base_client import OAuthError

        translate = i18n.translator(i18n.language(request))
        if oauth is None:
            return RedirectResponse("/signin", status_code=303)
        try:
            token = await oauth.idp.authorize_access_token(request)
        except (OAuthError, ValueError) as error:
            SIGN_INS.labels("oidc", "refused").inc()
            log.warning("oidc_sign_in_failed", error=str(error))
            return render(request, "signin.html", "signin", 401, next="/queue", local=settings.local_sign_in,
                          oidc=True, demo_users=auth.DEMO_USERS,
                          error=translate("The identity provider did not sign you in: {message}",
                                          message=clients.safe_text(str(error))))
        next_page = request.session.pop("next", "/queue")
        person = auth.oidc_person(token, settings.staff_roles_claim)
        auth.sign_in(request, person)
        SIGN_INS.labels("oidc", "ok").inc()
        log.info("signed_in", user=person.user_id, via="oidc")
        return RedirectResponse(next_page, status_code=303)

    @app.post("/signout")
    async def sign_out(request: Request, csrf: str = Form("")):
        if auth.csrf_ok(request, csrf):
            auth.sign_out(request)
        return RedirectResponse("/signin", status_code=303)

    @app.get("/")
    async def home() -> RedirectResponse:
        return RedirectResponse("/queue", status_code=303)

    # ------------------------------------------------------------------------------------- queue
    @app.get("/queue", response_class=HTMLResponse)
    async def queue(request: Request, kind: str = "", channel: str = "", region: str = "", rule: str = "",
                    min_amount: str = "", max_amount: str = "", currency: str = "", state: str = "open"):
        if (person := auth.current(request)) is None:
            return to_sign_in(request)
        filters = {"kind": kind if kind in KINDS else "", "channel": channel.strip(), "region": region.strip(),
                   "rule": rule.strip(), "currency": currency.strip().upper(),
                   "state": state if state in ("open", "expired") else "open"}
        problems = []
        params = dict(filters)
        for name, text in (("min_amount", min_amount), ("max_amount", max_amount)):
            if text.strip():
                minor = to_minor(text, filters["currency"] or "EUR")
                if minor is None:
                    problems.append(name)
                else:
                    params[name] = minor
        section = await fetch(clients.list_reviews(services, person.token, **params))
        reviews = section.get("data") or []
        # Oldest first (by when each is due), whatever order a service version answers in.
        reviews.sort(key=lambda r: (r.get("due_at") or "", r.get("opened_at") or ""))
        for review in reviews:
            review.setdefault("seconds_to_due", seconds_until(review.get("due_at")))
            review.setdefault("waiting_for_second_approver",
                              review.get("state") == "open" and review.get("required_approvals", 1) > 1
                              and 0 < len(review.get("approvers") or []) < review.get("required_approvals", 1))
            review.setdefault("allowed_roles", review.get("roles") or [])
            review.setdefault("can_reopen_roles", ["senior_reviewer"])
        return render(request, "queue.html", "queue", section=section, reviews=reviews,
                      filters=dict(filters, min_amount=min_amount, max_amount=max_amount), problems=problems)

    @app.post("/queue/{refund_id}/decision")
    async def decide(request: Request, refund_id: str, action: str = Form(...), reason: str = Form(""),
                     csrf: str = Form("")):
        if (person := auth.current(request)) is None:
            return to_sign_in(request)
        translate = i18n.translator(i18n.language(request))
        await act(request, f"review_{action}", csrf, reason,
                  lambda: clients.decide_review(services, person.token, refund_id, action, reason.strip()[:REASON_MAX]),
                  translate("{action}: recorded for {refund_id}.", action=translate(action), refund_id=refund_id))
        return back(request, "/queue")

    @app.post("/queue/{refund_id}/reopen")
    async def reopen(request: Request, refund_id: str, reason: str = Form(""), csrf: str = Form("")):
        if (person := auth.current(request)) is None:
            return to_sign_in(request)
        translate = i18n.translator(i18n.language(request))
        await act(request, "review_reopen", csrf, reason,
                  lambda: clients.reopen_review(services, person.token, refund_id, reason.strip()[:REASON_MAX]),
                  translate("Reopened {refund_id}.", refund_id=refund_id))
        return back(request, "/queue")

    # ----------------------------------------------------------------------------------- tickets
    @app.get("/tickets", response_class=HTMLResponse)
    async def tickets(request: Request, q: str = ""):
        if (person := auth.current(request)) is None:
            return to_sign_in(request)
        q = q.strip()
        section = await fetch(clients.search_tickets(services, person.token, q)) if q else {}
        return render(request, "tickets.html", "tickets", q=q, section=section)

    @app.get("/tickets/{refund_id}", response_class=HTMLResponse)
    async def ticket(request: Request, refund_id: str):
        if (person := auth.current(request)) is None:
            return to_sign_in(request)
        token = person.token
        notify, review, payout, settlement = await asyncio.gather(
            fetch(clients.get_ticket(services, token, refund_id)),
            fetch(clients.get_review(services, token, refund_id)),
            fetch(clients.get_payout(services, token, refund_id)),
            fetch(clients.settlement(services, token, refund_id)))
        if "unavailable" in notify:  # an older notify: its public tracking view, without the staff extras
            tracking = await fetch(clients.tracking(services, token, refund_id))
            if "data" in tracking:
                notify = dict(tracking, partial=notify["unavailable"])
        return render(request, "ticket.html", "ticket", refund_id=refund_id, notify=notify, review=review,
                      payout=payout, settlement=settlement, deadlines=deadline_rows(notify.get("data") or {}))

    # ---------------------------------------------------------------------------- reconciliation
    @app.get("/reconciliation", response_class=HTMLResponse)
    async def reconciliation(request: Request, category: str = "", state: str = "open"):
        if (person := auth.current(request)) is None:
            return to_sign_in(request)
        state = state if state in ("open", "resolved") else "open"
        category = category if category in DISCREPANCY_CATEGORIES else ""
        listing, books = await asyncio.gather(
            fetch(clients.discrepancies(services, person.token, state, category or None)),
            fetch(clients.ledger(services, person.token)))
        groups: dict[str, dict] = {}
        for row in listing.get("data") or []:
            group = groups.setdefault(row.get("category", "?"), {"rows": [], "totals": defaultdict(int)})
            group["rows"].append(row)
            amount = discrepancy_amount(row)
            if amount:
                group["totals"][amount["currency"]] += amount["value"]
        return render(request, "reconciliation.html", "reconciliation", listing=listing, groups=groups, books=books,
                      category=category, state=state, categories=DISCREPANCY_CATEGORIES,
                      amount_of=discrepancy_amount)

    @app.post("/reconciliation/{discrepancy_id}/resolve")
    async def resolve(request: Request, discrepancy_id: int, reason: str = Form(""), csrf: str = Form("")):
        if (person := auth.current(request)) is None:
            return to_sign_in(request)
        translate = i18n.translator(i18n.language(request))
        await act(request, "discrepancy_resolve", csrf, reason,
                  lambda: clients.resolve_discrepancy(services, person.token, discrepancy_id,
                                                      reason.strip()[:REASON_MAX]),
                  translate("Discrepancy {id} resolved.", id=discrepancy_id))
        return back(request, "/reconciliation")

    # ------------------------------------------------------------------------------ dead letters
    @app.get("/dead-letters", response_class=HTMLResponse)
    async def dead_letters(request: Request, service: str = "", state: str = "open"):
        if (person := auth.current(request)) is None:
            return to_sign_in(request)
        state = state if state in DEAD_LETTER_STATES else "open"
        shown = [service] if service in clients.SERVICES else list(clients.SERVICES)
        answers = await asyncio.gather(*[
            asyncio.gather(fetch(clients.dead_letters(services, person.token, name, state)),
                           fetch(clients.breaker(services, person.token, name))) for name in shown])
        panels = [{"service": name, "letters": letters, "breaker": breaker}
                  for name, (letters, breaker) in zip(shown, answers, strict=True)]
        return render(request, "dead_letters.html", "dead_letters", panels=panels, service=service, state=state,
                      services=clients.SERVICES, states=DEAD_LETTER_STATES)

    # Before the per-letter route: `breaker/close` would otherwise match it.
    @app.post("/dead-letters/{service}/breaker/close")
    async def close_breaker(request: Request, service: str, reason: str = Form(""), csrf: str = Form("")):
        if (person := auth.current(request)) is None:
            return to_sign_in(request)
        if service not in clients.SERVICES:
            return render(request, "error.html", "dead_letters", 404, message="no such service")
        translate = i18n.translator(i18n.language(request))
        await act(request, "breaker_close", csrf, reason,
                  lambda: clients.close_breaker(services, person.token, service, reason.strip()[:REASON_MAX]),
                  translate("The breaker of {service} is closed; it consumes again.", service=service))
        return back(request, "/dead-letters")

    @app.post("/dead-letters/{service}/{dead_letter_id}/{action}")
    async def handle_dead_letter(request: Request, service: str, dead_letter_id: str, action: str,
                                 reason: str = Form(""), csrf: str = Form("")):
        if (person := auth.current(request)) is None:
            return to_sign_in(request)
        if service not in clients.SERVICES or action not in ("replay", "discard"):
            return render(request, "error.html", "dead_letters", 404, message="no such action")
        translate = i18n.translator(i18n.language(request))
        await act(request, f"dead_letter_{action}", csrf, reason,
                  lambda: clients.handle_dead_letter(services, person.token, service, dead_letter_id, action,
                                                     reason.strip()[:REASON_MAX]),
                  translate("Dead letter {id} of {service}: {action} done.", id=dead_letter_id, service=service,
                            action=translate(action)))
        return back(request, "/dead-letters")

    # --------------------------------------------------------------------------- failed payouts
    @app.get("/payouts/failed", response_class=HTMLResponse)
    async def failed(request: Request):
        if (person := auth.current(request)) is None:
            return to_sign_in(request)
        listing = await fetch(clients.failed_payouts(services, person.token))
        gateways: list[str] = []
        if rows := listing.get("data"):
            # The configured routes are the service's, the same for every refund: one detail call names them.
            detail = await fetch(clients.get_payout(services, person.token, rows[0]["refund_id"]))
            gateways = (detail.get("data") or {}).get("gateways") or []
        return render(request, "payouts.html", "payouts", listing=listing, gateways=gateways)

    @app.post("/payouts/{refund_id}/exits")
    async def request_exit(request: Request, refund_id: str, exit: str = Form(...), reason: str = Form(""),
                           gateway: str = Form(""), reference: str = Form(""), evidence: str = Form(""),
                           csrf: str = Form("")):
        if (person := auth.current(request)) is None:
            return to_sign_in(request)
        translate = i18n.translator(i18n.language(request))
        body = {"exit": exit, "reason": reason.strip()[:REASON_MAX]}
        if exit == "reroute":
            body["gateway"] = gateway.strip()
        else:
            body |= {"reference": reference.strip(), "evidence": evidence.strip()}
        await act(request, f"payout_{exit}", csrf, reason,
                  lambda: clients.request_exit(services, person.token, refund_id, body),
                  translate("Exit {exit} requested for {refund_id}.", exit=translate(exit), refund_id=refund_id))
        return back(request, "/payouts/failed")

    return app


# ------------------------------------------------------------------------------------------ helpers
async def fetch(call) -> dict:
    """One section of a page: {"data": ...}, {"unavailable": service}, or {"error": ServiceError}."""
    try:
        return {"data": await call}
    except Unavailable as missing:
        return {"unavailable": missing.service, "why": missing.why}
    except ServiceError as error:
        return {"error": error}


def _oauth(settings: ConsoleSettings):
    from authlib.integrations.starlette_client import OAuth

    oauth = OAuth()
    oauth.register("idp", client_id=settings.oidc_client_id, client_secret=settings.oidc_client_secret,
                   server_metadata_url=settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
                   client_kwargs={"scope": settings.oidc_scope, "code_challenge_method": "S256"})
    return oauth


def _safe_next(target: str, default: str = "/queue") -> str:
    """A path on this console (not `//host/...`, which a browser takes as another site), else `default`."""
    return target if target.startswith("/") and not target.startswith("//") else default


def back_target(referer: str | None, own: str, default: str) -> str:
    """Where a form goes back to: the page it came from if that is on this console, else `default`."""
    if referer and referer.startswith(own):
        return referer
    return _safe_next(referer or default, default)


def money(amount: Any) -> str:
    """{"value": 600000, "currency": "EUR"} -> "6,000.00 EUR"."""
    if not isinstance(amount, dict) or "value" not in amount:
        return "—" if amount in (None, "") else str(amount)
    currency = amount.get("currency") or ""
    try:
        text = major_units_text(int(amount["value"]), currency)
    except (ValueError, TypeError):
        return f"{amount['value']} {currency}".strip()
    whole, _, fraction = text.lstrip("-").partition(".")
    sign = "-" if text.startswith("-") else ""
    return f"{sign}{int(whole):,}{'.' + fraction if fraction else ''} {currency}"


def to_minor(text: str, currency: str) -> int | None:
    try:
        value = Decimal(text.strip().replace(",", ""))
        exponent = currency_exponent(currency)
    except (InvalidOperation, ValueError, KeyError):
        return None
    minor = value * (10 ** exponent)
    return int(minor) if minor == minor.to_integral_value() and minor >= 0 else None


def when(value: Any) -> str:
    """An RFC 3339 time as `2026-12-02 18:20:05 UTC`."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds_until(value: Any) -> int | None:
    if not value:
        return None
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() - time.time())
    except ValueError:
        return None


def time_left(translate, seconds: Any) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    minutes = abs(seconds) // 60
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    span = (translate("{d}d {h}h", d=days, h=hours) if days else
            translate("{h}h {m}m", h=hours, m=minutes) if hours else translate("{m}m", m=max(minutes, 0)))
    return translate("{span} left", span=span) if seconds >= 0 else translate("overdue by {span}", span=span)


# The statuses that end each stage: the stage's actual time is the first of them in the timeline.
STAGE_ENDS = {"intake": ("accepted", "rejected"), "approval": ("approved", "denied"),
              "payout": ("succeeded", "paid", "failed"), "reconcile": ("reconciled",), "notify": ("completed",)}


def deadline_rows(ticket: dict) -> list[dict]:
    """Per stage: its deadline and when it actually ended (from the timeline), late when after the deadline.
    `deadlines` may map a stage to its deadline or to {"due"/"deadline", "actual"/"at"}, or list notify's
    [{"stage", "due_at", "done_at", "met"}] (services/notify/domain.py `deadlines_vs_actual`)."""
    deadlines = ticket.get("deadlines") or {}
    if isinstance(deadlines, list):
        deadlines = {d.get("stage", "?"): d for d in deadlines if isinstance(d, dict)}
    timeline = ticket.get("timeline") or {}
    if isinstance(timeline, list):
        timeline = {e.get("status"): e.get("at") for e in timeline if isinstance(e, dict)}
    rows = []
    for stage, value in deadlines.items():
        entry = value if isinstance(value, dict) else {"due": value}
        due = entry.get("due") or entry.get("deadline") or entry.get("due_at")
        actual = entry.get("actual") or entry.get("at") or entry.get("done_at")
        actual = actual or next((timeline[s] for s in STAGE_ENDS.get(stage, ()) if timeline.get(s)), None)
        late = None if entry.get("met") is None else not entry["met"]
        with contextlib.suppress(TypeError, ValueError):
            if late is None and due and actual:
                late = datetime.fromisoformat(str(actual)) > datetime.fromisoformat(str(due))
        rows.append({"stage": stage, "due": due, "actual": actual, "late": late})
    order = list(STAGE_ENDS)
    return sorted(rows, key=lambda r: order.index(r["stage"]) if r["stage"] in order else len(order))


def discrepancy_amount(row: dict) -> dict | None:
    """The money a discrepancy is about: payout's expected amount, else what the gateway settled."""
    for key in ("amount", "expected", "settled"):
        if isinstance(row.get(key), dict):
            return row[key]
    if row.get("expected_value") is not None:
        return {"value": row["expected_value"], "currency": row.get("expected_currency") or ""}
    if row.get("settled_value") is not None:
        return {"value": row["settled_value"], "currency": row.get("settled_currency") or ""}
    return None


__all__ = ["create_app", "money", "time_left", "to_minor"]
