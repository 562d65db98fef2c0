"""What an inbox's key costs per insert with random (UUIDv4) and time-ordered (UUIDv7) event ids.

Against the stack's PostgreSQL (`make up` first): for each kind of id, in turn and twice over, it fills a
scratch table shaped like a stage's inbox (primary key (source, event_id)) with `--rows` ids of that kind,
checkpoints, then times `--batches` transactions of `--batch` inserts, as a stage's consume loop writes
them, and prints the WAL written per row (full-page images included: the first change to a page after a
checkpoint writes the whole page) and the time per transaction. This is what chose time-ordered ids for
the stages' events (shared/contract/envelope.py `new_event_id`).

    python -m tools.bench_inbox_keys --rows 1000000
"""

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import typer
import uuid6
from rich.console import Console
from rich.table import Table

from devstack.stack import Stack
from tools.bench_preload import wal_snapshot

KINDS: dict[str, Callable[[], uuid.UUID]] = {"random (v4)": uuid.uuid4, "time-ordered (v7)": uuid6.uuid7}
SOURCE = "refund-pipeline/bench"
_TABLE = "bench_inbox_keys"
_FILL_CHUNK = 10_000


async def _one(conn: asyncpg.Connection, make: Callable[[], uuid.UUID], rows: int, batches: int,
               batch: int) -> tuple[float, float, float]:
    """(WAL bytes per row, full-page images per row, ms per transaction) for one kind of id."""
    await conn.execute(f"DROP TABLE IF EXISTS {_TABLE}")
    await conn.execute(f"CREATE TABLE {_TABLE} (source text NOT NULL, event_id text NOT NULL, "
                       "received_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, event_id))")
    insert = (f"INSERT INTO {_TABLE} (source, event_id) SELECT $1, unnest($2::text[]) "
              "ON CONFLICT DO NOTHING")
    for done in range(0, rows, _FILL_CHUNK):
        await conn.execute(insert, SOURCE, [str(make()) for _ in range(min(_FILL_CHUNK, rows - done))])
    await conn.execute("CHECKPOINT")
    before = await wal_snapshot(conn)
    started = time.perf_counter()
    for _ in range(batches):
        async with conn.transaction():
            await conn.execute(insert, SOURCE, [str(make()) for _ in range(batch)])
    took = time.perf_counter() - started
    after = await wal_snapshot(conn)
    written = batches * batch
    return ((after["wal_bytes"] - before["wal_bytes"]) / written,
            (after["wal_fpi"] - before["wal_fpi"]) / written, 1000 * took / batches)


async def _run(dsn: str, rows: int, batches: int, batch: int, rounds: int) -> list[tuple[str, float, float, float]]:
    conn = await asyncpg.connect(dsn)
    try:
        results = []
        for _ in range(rounds):
            for name, make in KINDS.items():
                results.append((name, *await _one(conn, make, rows, batches, batch)))
        await conn.execute(f"DROP TABLE IF EXISTS {_TABLE}")
        return results
    finally:
        await conn.close()


def main(rows: int = typer.Option(1_000_000, help="ids in the table before the timed inserts"),
         batches: int = typer.Option(1000, help="timed transactions"),
         batch: int = typer.Option(20, help="inserts per transaction"),
         rounds: int = typer.Option(2, help="times each kind runs, alternating")) -> None:
    stack = Stack(run_dir=Path(os.environ.get("REFUND_RUN_DIR", ".run/dev")))
    table = Table(title=f"{batches} transactions of {batch} inbox inserts, {rows:,} rows there, after a CHECKPOINT")
    for column in ("event ids", "WAL bytes/row", "full-page images/row", "ms/transaction"):
        table.add_column(column, justify="left" if column == "event ids" else "right")
    for name, wal, fpi, ms in asyncio.run(_run(stack.dsn, rows, batches, batch, rounds)):
        table.add_row(name, f"{wal:,.0f}", f"{fpi:.3f}", f"{ms:.3f}")
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
