"""Manage platform API keys for `POST /v1/refunds`.

    python -m services.intake.keys create shop-eu [--label ci] [--expires-in-days 90]
    python -m services.intake.keys list [shop-eu]
    python -m services.intake.keys revoke rk_1a2b3c4d

Rotation: create a new key, switch the platform over, revoke the old one; a
source may hold several active keys meanwhile. Connects to DATABASE_URL.
"""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import typer

from services.intake import store
from services.intake.settings import IntakeSettings

cli = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)


async def _with_db(work):
    conn = await asyncpg.connect(IntakeSettings().database_url)
    try:
        return await work(conn)
    finally:
        await conn.close()


@cli.command()
def create(source: str, label: Annotated[str | None, typer.Option(help="what the key is for")] = None,
           expires_in_days: Annotated[float | None, typer.Option(help="expire after this many days")] = None):
    """Create a key for SOURCE and print it (shown once; only its hash is stored)."""
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    new = asyncio.run(_with_db(lambda conn: store.create_api_key(conn, source, label=label,
                                                                 expires_at=expires_at)))
    typer.echo(f"key id: {new.key_id} (source {source})", err=True)
    typer.echo(new.key)


@cli.command("list")
def list_keys(source: Annotated[str | None, typer.Argument(help="only this source's keys")] = None):
    """List keys (ids only; the keys themselves are not stored)."""
    rows = asyncio.run(_with_db(lambda conn: store.list_api_keys(conn, source)))
    now = datetime.now(UTC)
    for row in rows:
        state = ("revoked" if row["revoked_at"] else
                 "expired" if row["expires_at"] and row["expires_at"] <= now else "active")
        expires = row["expires_at"].isoformat() if row["expires_at"] else "never"
        typer.echo(f"{row['key_id']}\t{row['source']}\t{state}\tcreated {row['created_at'].isoformat()}"
                   f"\texpires {expires}\t{row['label'] or ''}")


@cli.command()
def revoke(key_id: str):
    """Revoke a key by its id (rk_...); requests with it get 401 from now on."""
    if not asyncio.run(_with_db(lambda conn: store.revoke_api_key(conn, key_id))):
        typer.echo(f"no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


if __name__ == "__main__":
    cli()
