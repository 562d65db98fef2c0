"""`python -m devstack up|down|status|restart|env` — see devstack/__init__.py."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import prometheus
from .processes import StackError, console
from .stack import Stack

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Local Kafka + PostgreSQL + services.")
RunDir = Annotated[
    Optional[Path],
    typer.Option("--run-dir", help="State/log dir (default $REFUND_RUN_DIR or <repo>/.run/dev)."),
]
out = Console(highlight=False, soft_wrap=True)  # stdout: only what callers may parse


def _fail(exc: StackError) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(1)


@app.command()
def up(
    run_dir: RunDir = None,
    services: Annotated[bool, typer.Option("--services/--no-services", help="Also start the five services and the console.")] = True,
) -> None:
    """Bring back whatever is down on its data and port (idempotent), then print the connection env."""
    stack = Stack(run_dir)
    started = time.monotonic()
    try:
        stack.up(services=services)
        # A local Prometheus for SREs (rules from deploy/prometheus), when the binary is there.
        if services and prometheus.binary():
            stack.start_prometheus()
    except StackError as exc:
        _fail(exc)
    console.print(f"[bold green]up[/] in {time.monotonic() - started:.1f}s (run dir {stack.run_dir})")
    for key, value in stack.env().items():
        print(f"{key}={value}")


@app.command()
def down(run_dir: RunDir = None) -> None:
    """Stop everything this run dir started and delete its Kafka/PostgreSQL data."""
    try:
        Stack(run_dir).down()
    except StackError as exc:
        _fail(exc)


@app.command()
def restart(
    component: Annotated[str, typer.Argument(help="kafka, postgres or a service (e.g. payout, payout@2).")],
    run_dir: RunDir = None,
) -> None:
    """Restart one component on its data and port; the services reconnect."""
    try:
        Stack(run_dir).restart(component)
    except StackError as exc:
        _fail(exc)
    console.print(f"[bold green]restarted[/] {component}")


@app.command()
def status(run_dir: RunDir = None) -> None:
    """Table of components: pid, alive (the process), ready (it answers; a service's /readyz), address."""
    stack = Stack(run_dir)
    rows = stack.status()
    if not rows:
        console.print(f"nothing recorded in {stack.state_path}")
        return
    table = Table(title=f"devstack — {stack.run_dir}")
    for column in ("component", "pid", "alive", "ready", "address"):
        table.add_column(column)
    for row in rows:
        alive = "[green]yes[/]" if row["alive"] else "[red]no[/]"
        ready = "[green]yes[/]" if row["ready"] else "[red]no[/]" if row["alive"] else "-"
        if row["unready"]:
            ready += f" ({', '.join(row['unready'])})"
        pid = "external" if row["external"] else str(row["pid"] or "-")
        table.add_row(row["component"], pid, alive, ready, row["address"])
    out.print(table)


@app.command()
def scale(
    services: Annotated[list[str], typer.Argument(help="Services to run a second instance of (default: all five).")] = None,
    run_dir: RunDir = None,
) -> None:
    """Start a second instance of services in their consumer groups (stop with `down`)."""
    from .stack import SERVICES

    try:
        started = Stack(run_dir).start_instances(*(services or SERVICES))
    except StackError as exc:
        _fail(exc)
    console.print(f"[bold green]scaled[/]: {', '.join(started)}")


@app.command()
def env(run_dir: RunDir = None) -> None:
    """Print `export` lines for the running stack (eval "$(python -m devstack env)")."""
    try:
        values = Stack(run_dir).env()
    except StackError as exc:
        _fail(exc)
    for key, value in values.items():
        print(f"export {key}={shlex.quote(value)}")


if __name__ == "__main__":
    app()
