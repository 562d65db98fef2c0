"""What customers read: email, SMS and the tracking page, from Jinja2 templates per locale."""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.notify import domain
from shared.contract.events import Status
from shared.contract.lifecycle import TERMINAL_STATUSES
from shared.contract.money import Money

TEMPLATES = Path(__file__).parent / "templates"
_ENV = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                   autoescape=select_autoescape(["html.j2"]), keep_trailing_newline=True)


def local_date(when: datetime | None, locale: str) -> str | None:
    if when is None:
        return None
    if locale == "zh-CN":
        return f"{when.year}年{when.month}月{when.day}日"
    return when.strftime("%d %b %Y").lstrip("0")


def _moment(when: datetime, locale: str) -> str:
    return f"{local_date(when, locale)} {when.strftime('%H:%M')} UTC"


def _amount(amount: dict | None) -> str:
    return Money.model_validate(amount).format() if amount else ""


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    link: str = ""  # the customer's tracking page; `<link>/opt-out` unsubscribes


def render_message(channel: str, locale: str, milestone: str, *, order_id: str, amount: dict | None,
                   eta: datetime | None, reason_codes: list[str], link: str, feedback_url: str | None) -> Message:
    """The email (subject + body) or SMS text for one milestone; feedback is asked only once it is complete."""
    values = {"milestone": milestone, "order_id": order_id, "amount": _amount(amount),
              "eta": local_date(eta, locale), "reason_codes": reason_codes, "link": link,
              "feedback_url": feedback_url if milestone == domain.Milestone.COMPLETED else None}
    if channel == "sms":
        return Message("", _ENV.get_template(f"{locale}/sms.txt.j2").render(values).strip(), link)
    subject = _ENV.get_template(f"{locale}/subject.txt.j2").render(values).strip()
    return Message(subject, _ENV.get_template(f"{locale}/body.txt.j2").render(values), link)


def render_page(row: dict, *, locale: str, action: str, opted_out: bool, destination: dict | None = None,
                destination_error: str | None = None, feedback: dict | None = None,
                feedback_error: str | None = None) -> str:
    """The customer's tracking page: progress bar, ETA, timeline and what happens next; for a failed
    refund the form for a new bank account (or that one was received), for a finished one the rating form.
    `action` is the page's own path: its forms post below it."""
    status = Status(row["status"])
    entries = domain.history_in_order(row.get("history") or []) or domain.timeline(row["timeline"])
    stages = [{**entry, "note": entry.get("note"), "at_text": _moment(datetime.fromisoformat(entry["at"]), locale)}
              for entry in entries]
    return _ENV.get_template("page.html.j2").render(
        locale=locale, order_id=row["order_id"] or "", amount=_amount(row["amount"]), status=status.value,
        progress=domain.PROGRESS[status], eta=local_date(row["eta"], locale),
        eta_iso=row["eta"].isoformat() if row["eta"] else "", timeline=stages, action=action,
        opted_out=opted_out, needs_destination=status is Status.FAILED, destination=destination,
        destination_error=destination_error, asks_feedback=status in TERMINAL_STATUSES, feedback=feedback,
        feedback_error=feedback_error)


def render_refused(reason: str, locale: str) -> str:
    return _ENV.get_template("refused.html.j2").render(reason=reason, locale=locale)
