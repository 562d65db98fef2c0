"""A stage's dead letters from the terminal: `python -m tools.dead_letters --url http://127.0.0.1:8083 list`.

Talks to one service's `/v1/dead-letters` routes (shared/runtime/dead_letter_api.py) with a staff token:
`--token` (or STAFF_TOKEN), else, locally, one minted for `--user` with `--role` (tools/staff.py).

    list [--state open|replayed|discarded]     the dead letters, oldest first
    show ID                                    one, with its payload decoded and its headers
    replay ID --reason "..."                   run it through the stage again (the cause is fixed)
    discard ID --reason "..."                  close it without processing it
    breaker [--close --reason "..."]           the dead-letter breaker; --close resumes consuming
"""

import json
from typing import Annotated, Optional

import httpx
import typer
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from shared.runtime.roles import Role
from shared.runtime.settings import ServiceSettings
from shared.runtime.staff import mint_token

app = typer.Typer(help=__doc__.split("\n\n")[0], no_args_is_help=True, add_completion=False)
console = Console()


class Client:
    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"},
                                 timeout=30)

    def call(self, method: str, path: str, **options) -> dict:
        try:
            response = self.http.request(method, f"/v1/dead-letters{path}", **options)
        except httpx.HTTPError as error:
            console.print(f"[red]cannot reach {self.http.base_url}: {error}[/red]")
            raise typer.Exit(2) from None
        if response.is_error:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            console.print(f"[red]{response.status_code}: {detail}[/red]")
            raise typer.Exit(1)
        return response.json()


@app.callback()
def connect(ctx: typer.Context,
            url: Annotated[str, typer.Option(envvar="DEAD_LETTERS_URL", help="the service's base URL")]
            = "http://127.0.0.1:8080",
            token: Annotated[Optional[str], typer.Option(envvar="STAFF_TOKEN", help="a staff bearer token")] = None,
            user: Annotated[str, typer.Option(help="without --token: mint a local token for this user")]
            = "ops-cli",
            role: Annotated[list[Role], typer.Option(help="the minted token's roles (repeatable)")] = (
                [Role.SENIOR_REVIEWER])) -> None:
    ctx.obj = Client(url, token or mint_token(ServiceSettings().staff_token_secret, user, list(role)))


@app.command("list")
def list_letters(ctx: typer.Context,
                 state: Annotated[Optional[str], typer.Option(help="open, replayed or discarded")] = None,
                 limit: int = 200) -> None:
    """The service's dead letters, oldest first."""
    params = {"limit": limit} | ({"state": state} if state else {})
    found = ctx.obj.call("GET", "", params=params)
    table = Table(title=f"{found['service']}: dead letters" + (f" ({state})" if state else ""))
    for column in ("id", "state", "reason", "topic/partition/offset", "key", "dead-lettered", "error", "handled"):
        table.add_column(column, overflow="fold")
    for letter in found["dead_letters"]:
        handled = f"{letter['handled_by']}: {letter['handled_reason']}" if letter["handled_by"] else ""
        if letter["replayed_as"]:
            handled += f" (dead-lettered again as {letter['replayed_as']})"
        table.add_row(str(letter["id"]), _state(letter["state"]), letter["reason"],
                      f"{letter['topic']}/{letter['partition']}/{letter['offset']}", letter["key"] or "",
                      letter["dead_lettered_at"][:19], letter["error"][:120], handled)
    console.print(table)
    console.print(f"{len(found['dead_letters'])} dead letter(s)")


@app.command()
def show(ctx: typer.Context, letter_id: int) -> None:
    """One dead letter, its payload decoded."""
    _print(ctx.obj.call("GET", f"/{letter_id}"))


@app.command()
def replay(ctx: typer.Context, letter_id: int,
           reason: Annotated[str, typer.Option(help="why it may run again (what was fixed)")]) -> None:
    """Run the record through the stage again, now that its cause is fixed."""
    letter = ctx.obj.call("POST", f"/{letter_id}/replay", json={"reason": reason})
    _print(letter)
    if letter["replayed_as"]:
        console.print(f"[yellow]it was dead-lettered again, as {letter['replayed_as']}[/yellow]")


@app.command()
def discard(ctx: typer.Context, letter_id: int, reason: Annotated[str, typer.Option(help="why")]) -> None:
    """Close the dead letter without processing it."""
    _print(ctx.obj.call("POST", f"/{letter_id}/discard", json={"reason": reason}))


@app.command()
def breaker(ctx: typer.Context, close: Annotated[bool, typer.Option("--close", help="resume consuming")] = False,
            reason: Annotated[Optional[str], typer.Option(help="why (required with --close)")] = None) -> None:
    """The dead-letter breaker: open means the stage stopped consuming."""
    if close and not reason:
        console.print("[red]--close needs a --reason[/red]")
        raise typer.Exit(2)
    status = ctx.obj.call("POST", "/breaker/close", json={"reason": reason}) if close else \
        ctx.obj.call("GET", "/breaker")
    table = Table(title="dead-letter breaker", show_header=False)
    table.add_row("state", "[red]OPEN: not consuming[/red]" if status["open"] else "[green]closed[/green]")
    table.add_row("dead letters in the last minute", str(status["last_minute"]))
    table.add_row("limit per minute", str(status["limit_per_minute"] or "off"))
    table.add_row("opened at", status["opened_at"] or "")
    console.print(table)


def _print(letter: dict) -> None:
    table = Table(title=f"dead letter {letter['id']} ({letter['service']})", show_header=False)
    for field in ("state", "reason", "error", "topic", "partition", "offset", "key", "dead_lettered_at",
                  "handled_by", "handled_reason", "handled_at", "replay_of", "replayed_as"):
        value = letter[field]
        table.add_row(field, _state(value) if field == "state" else "" if value is None else str(value))
    table.add_row("headers", json.dumps(letter["headers"]))
    console.print(table)
    payload = letter["payload"]
    console.print(f"payload ({letter['payload_encoding']}):")
    if letter["payload_encoding"] == "json":
        console.print(Syntax(json.dumps(payload, indent=2, ensure_ascii=False), "json", word_wrap=True))
    else:
        console.print(payload, markup=False)


def _state(state: str) -> str:
    return {"open": "[yellow]open[/yellow]", "replayed": "[green]replayed[/green]"}.get(state, state)


if __name__ == "__main__":
    app()
