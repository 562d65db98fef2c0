"""The asyncpg pool and the plain-SQL migration runner every service uses.

Each service owns one schema and a `migrations/NNNN_name.sql` folder; applied
versions are recorded in `<schema>.schema_migrations`. An advisory lock per
schema lets several replicas start at once.
"""

import zlib
from collections.abc import Iterable
from pathlib import Path

import asyncpg
import orjson

# Tables the shared consume loop needs in every stage's schema (inbox, outbox).
_STAGE_MIGRATIONS = Path(__file__).parent / "migrations"


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, schema="pg_catalog",
            encoder=lambda value: orjson.dumps(value).decode(), decoder=orjson.loads,
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset (RESET ALL, UNLISTEN, unlock all: one more round trip per release):
    pooled connections never hold session state -- locks and settings are transaction-scoped, nothing
    LISTENs -- so there is nothing to reset."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 8) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init_connection,
                                     reset=_keep_session)


async def apply_migrations(dsn: str, schema: str, folder: Path, *, stage_tables: bool = True) -> list[str]:
    """Apply the folder's not-yet-applied SQL files in name order; return what ran.

    `stage_tables` first adds the inbox and outbox the shared consume loop needs.
    """
    applied: list[str] = []
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", zlib.crc32(schema.encode()))
        # A role that owns its schema (devstack, Kubernetes) need not be allowed to create schemas.
        if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations '
            "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')}
        files = (sorted(_STAGE_MIGRATIONS.glob("*.sql")) if stage_tables else []) + sorted(folder.glob("*.sql"))
        for path in files:
            if path.stem in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text().replace("{schema}", schema))
                await conn.execute(f'INSERT INTO "{schema}".schema_migrations (version) VALUES ($1)', path.stem)
            applied.append(path.stem)
    finally:
        await conn.close()
    return applied


async def delete_older(pool: asyncpg.Pool, table: str, row_key: str, stamped: str, seconds: float,
                       chunk: int = 10_000) -> int:
    """Delete `table`'s rows whose `stamped` column is more than `seconds` old, `chunk` rows (picked by
    `row_key`) per statement so a prune never holds many locks at once; how many went."""
    deleted = 0
    while True:
        done = await pool.execute(
            f"DELETE FROM {table} WHERE {row_key} = ANY(ARRAY(SELECT {row_key} FROM {table} "
            f"WHERE {stamped} < now() - make_interval(secs => $1) LIMIT $2))", seconds, chunk)
        count = int(done.split()[-1])
        deleted += count
        if count < chunk:
            return deleted


def array_params(kinds: Iterable[str], start: int = 1) -> str:
    """`$start::kind[], $start+1::kind[], …`: the parameters of a set-based statement that unnests one
    array per column (`FROM unnest(<these>) AS t(<columns>)`)."""
    return ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(kinds, start=start))
