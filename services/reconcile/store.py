"""Reconcile's tables: settlement reports and lines, the discrepancy queue, the ledger."""

import hashlib
from dataclasses import asdict

import asyncpg

from services.reconcile import domain
from services.reconcile.settlement_files import parse


async def ingest_report(conn: asyncpg.Connection, *, gateway: str, fmt: str, text: str,
                        received_from: str) -> dict:
    """Store a report file's lines once: the same file again (by hash) or a known line changes nothing."""
    sha = hashlib.sha256(text.encode()).hexdigest()
    known = await conn.fetchrow("SELECT * FROM reconcile.settlement_reports WHERE sha256 = $1", sha)
    if known:
        return _summary(known, duplicate_file=True)
    parsed = parse(fmt, text)
    inserted = await conn.fetch(
        "INSERT INTO reconcile.settlement_lines (gateway, txn_id, line_no, gateway_ref, kind, amount_value, "
        "currency, fee_value) SELECT $1, * FROM unnest($2::text[], $3::int[], $4::text[], $5::text[], "
        "$6::bigint[], $7::text[], $8::bigint[]) ON CONFLICT (gateway, txn_id) DO NOTHING RETURNING id",
        gateway, [l.txn_id for l in parsed.lines], [l.line_no for l in parsed.lines],
        [l.gateway_ref for l in parsed.lines], [l.kind for l in parsed.lines],
        [l.amount_value for l in parsed.lines], [l.currency for l in parsed.lines],
        [l.fee_value for l in parsed.lines])
    row = await conn.fetchrow(
        "INSERT INTO reconcile.settlement_reports (gateway, format, sha256, received_from, rows_total, lines_new, "
        "lines_known, ignored, errors) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
        gateway, fmt, sha, received_from, parsed.rows, len(inserted), len(parsed.lines) - len(inserted),
        [{"line": n, "why": why} for n, why in parsed.ignored], [asdict(e) for e in parsed.errors])
    await conn.execute("UPDATE reconcile.settlement_lines SET report_id = $1 WHERE id = ANY($2::bigint[])",
                       row["id"], [r["id"] for r in inserted])
    return _summary(row, duplicate_file=False)


def _summary(row: asyncpg.Record, *, duplicate_file: bool) -> dict:
    return {"report_id": row["id"], "sha256": row["sha256"], "duplicate_file": duplicate_file,
            "rows": row["rows_total"], "lines_new": row["lines_new"], "lines_known": row["lines_known"],
            "ignored": row["ignored"], "errors": row["errors"]}


async def open_discrepancy(conn: asyncpg.Connection, category: str, *, ref: domain.GatewayRef,
                           refund_id: str | None, line_id: int | None, expected: tuple | None,
                           settled: tuple | None) -> int | None:
    expected, settled = expected or (None, None), settled or (None, None)
    return await conn.fetchval(
        "INSERT INTO reconcile.discrepancies (category, refund_id, gateway, gateway_ref, line_id, expected_value, "
        "expected_currency, settled_value, settled_currency) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        "ON CONFLICT DO NOTHING RETURNING id", category, refund_id, *ref, line_id, *expected, *settled)


async def close_automatically(conn: asyncpg.Connection, *, ref: domain.GatewayRef, categories: list[str],
                              why: str) -> int:
    """Late data settled these open discrepancies; audited as the matcher's action."""
    rows = await conn.fetch(
        "UPDATE reconcile.discrepancies SET status = 'auto_resolved', closed_at = now(), resolution = $4 "
        "WHERE status = 'open' AND gateway = $1 AND gateway_ref = $2 AND category = ANY($3) RETURNING id",
        *ref, categories, why)
    await conn.executemany(
        "INSERT INTO reconcile.discrepancy_audit (discrepancy_id, actor, action, reason) "
        "VALUES ($1, 'reconcile-matcher', 'auto_resolved', $2)", [(r["id"], why) for r in rows])
    return len(rows)


async def ledger(conn: asyncpg.Connection | asyncpg.Pool) -> list[domain.Ledger]:
    """Each side of the invariant from its own table: payouts, matched lines, open discrepancies."""
    rows = await conn.fetch("""
        WITH paid AS (
            SELECT expected_currency AS currency, sum(expected_value) AS paid,
                   sum(expected_value) FILTER (WHERE state = 'resolved') AS resolved,
                   sum(expected_value) FILTER (WHERE state = 'awaiting') AS awaiting
            FROM reconcile.payouts GROUP BY 1),
        settled AS (  -- an FX-tolerance match counts at payout's expected amount; its gap apart
            SELECT currency, sum(amount_value - fx_difference) AS matched, sum(fx_difference) AS fx_difference
            FROM reconcile.settlement_lines WHERE state = 'matched' AND kind = 'refund' GROUP BY currency),
        open AS (
            SELECT expected_currency AS currency, sum(expected_value) AS open,
                   sum(expected_value) FILTER (WHERE category = 'reversed') AS reversed
            FROM reconcile.discrepancies
            WHERE status = 'open' AND refund_id IS NOT NULL AND category = ANY($1) GROUP BY 1)
        SELECT currency, coalesce(paid, 0)::bigint AS paid, coalesce(matched, 0)::bigint AS matched,
               coalesce(open, 0)::bigint AS open, coalesce(resolved, 0)::bigint AS resolved,
               coalesce(awaiting, 0)::bigint AS awaiting, coalesce(reversed, 0)::bigint AS reversed,
               coalesce(fx_difference, 0)::bigint AS fx_difference
        FROM paid FULL JOIN settled USING (currency) FULL JOIN open USING (currency) ORDER BY currency
        """, list(domain.PAYOUT_CATEGORIES))
    return [domain.Ledger(r["currency"], r["paid"], r["matched"], r["open"], r["resolved"], r["awaiting"],
                          r["reversed"], r["fx_difference"])
            for r in rows]


async def report_cursor(conn: asyncpg.Connection | asyncpg.Pool, gateway: str) -> asyncpg.Record | None:
    """The gateway's pull cursor as stored (`kind`, `position`), or None before its first file."""
    return await conn.fetchrow("SELECT kind, position FROM reconcile.report_pull_cursors WHERE gateway = $1",
                               gateway)


async def move_report_cursor(conn: asyncpg.Connection, gateway: str, *, seen: asyncpg.Record | None, kind: str,
                             position: str, files: int) -> bool:
    """Move the cursor from what the pull read (`seen`) to `position`; False if another pull moved it first.

    Called in the transaction that ingests the file, before the ingest: the row lock orders pulls of
    one gateway (replicas), and the loser's ingest is never written.
    """
    if seen is None:
        return await conn.fetchval(
            "INSERT INTO reconcile.report_pull_cursors (gateway, kind, position, files) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (gateway) DO NOTHING RETURNING true", gateway, kind, position, files) is not None
    moved = await conn.execute(
        "UPDATE reconcile.report_pull_cursors SET kind = $2, position = $3, files = files + $4, moved_at = now() "
        "WHERE gateway = $1 AND kind = $5 AND position = $6", gateway, kind, position, files, seen["kind"],
        seen["position"])
    return moved == "UPDATE 1"
