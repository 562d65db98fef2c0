"""Reconcile's tables: settlement reports and lines, the discrepancy queue, the ledger."""

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import NamedTuple

import asyncpg

from services.reconcile import domain
from services.reconcile.settlement_files import parse
from shared.runtime.db import array_params

# A payout `p` and a settlement line `l` are about the same refund: one gateway, one reference on it.
_SAME_REF = "p.gateway = l.gateway AND p.gateway_ref = l.gateway_ref"


async def ingest_report(conn: asyncpg.Connection, *, gateway: str, fmt: str, text: str,
                        received_from: str) -> dict:
    """Store a report file's lines once: the same file again (by hash) or a known line changes nothing."""
    sha = hashlib.sha256(text.encode()).hexdigest()
    known = await conn.fetchrow("SELECT * FROM reconcile.settlement_reports WHERE sha256 = $1", sha)
    if known:
        return _summary(known, duplicate_file=True)
    parsed = parse(fmt, text)
    # The report first, so each new line is written with its report_id (not updated to it afterwards:
    # a second version of every line, its index entries and the ledger's trigger over them again).
    report_id = await conn.fetchval(
        "INSERT INTO reconcile.settlement_reports (gateway, format, sha256, received_from, rows_total, lines_new, "
        "lines_known, ignored, errors) VALUES ($1, $2, $3, $4, $5, 0, 0, $6, $7) RETURNING id",
        gateway, fmt, sha, received_from, parsed.rows,
        [{"line": n, "why": why} for n, why in parsed.ignored], [asdict(e) for e in parsed.errors])
    new_lines = await conn.fetchval(
        "WITH new AS (INSERT INTO reconcile.settlement_lines (report_id, gateway, txn_id, line_no, gateway_ref, kind, "
        "amount_value, currency, fee_value) SELECT $1, $2, * FROM unnest($3::text[], $4::int[], $5::text[], "
        "$6::text[], $7::bigint[], $8::text[], $9::bigint[]) ON CONFLICT (gateway, txn_id) DO NOTHING RETURNING 1) "
        "SELECT count(*) FROM new",
        report_id, gateway, [l.txn_id for l in parsed.lines], [l.line_no for l in parsed.lines],
        [l.gateway_ref for l in parsed.lines], [l.kind for l in parsed.lines],
        [l.amount_value for l in parsed.lines], [l.currency for l in parsed.lines],
        [l.fee_value for l in parsed.lines])
    row = await conn.fetchrow(
        "UPDATE reconcile.settlement_reports SET lines_new = $2, lines_known = $3 WHERE id = $1 RETURNING *",
        report_id, new_lines, len(parsed.lines) - new_lines)
    return _summary(row, duplicate_file=False)


def _summary(row: asyncpg.Record, *, duplicate_file: bool) -> dict:
    return {"report_id": row["id"], "sha256": row["sha256"], "duplicate_file": duplicate_file,
            "rows": row["rows_total"], "lines_new": row["lines_new"], "lines_known": row["lines_known"],
            "ignored": row["ignored"], "errors": row["errors"]}


class Opening(NamedTuple):
    """A discrepancy to open (nothing if the same one is open already)."""

    category: str
    refund_id: str | None
    ref: domain.GatewayRef
    line_id: int | None
    expected: tuple[int, str] | None
    settled: tuple[int, str] | None


async def open_discrepancies(conn: asyncpg.Connection, openings: Sequence[Opening]) -> None:
    """Open the discrepancies in one statement; one already open (same category, reference and line) stays."""
    if not openings:
        return
    expected = [o.expected or (None, None) for o in openings]
    settled = [o.settled or (None, None) for o in openings]
    await conn.execute(
        "INSERT INTO reconcile.discrepancies (category, refund_id, gateway, gateway_ref, line_id, expected_value, "
        "expected_currency, settled_value, settled_currency) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], "
        "$7::text[], $8::bigint[], $9::text[]) ON CONFLICT DO NOTHING",
        [o.category for o in openings], [o.refund_id for o in openings], [o.ref.gateway for o in openings],
        [o.ref.reference for o in openings], [o.line_id for o in openings], [e[0] for e in expected],
        [e[1] for e in expected], [s[0] for s in settled], [s[1] for s in settled])


async def close_automatically(conn: asyncpg.Connection, closes: Sequence[tuple[domain.GatewayRef, str, str]]) -> None:
    """Late data settled these open discrepancies, each (reference, category, why); audited as the matcher's
    action, in the same statement. At most one entry per (reference, category)."""
    if not closes:
        return
    await conn.execute(
        "WITH closed AS ("
        "  UPDATE reconcile.discrepancies d SET status = 'auto_resolved', closed_at = now(), resolution = c.why "
        "  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS c(gateway, gateway_ref, category, why) "
        "  WHERE d.status = 'open' AND d.gateway = c.gateway AND d.gateway_ref = c.gateway_ref "
        "    AND d.category = c.category RETURNING d.id, c.why) "
        "INSERT INTO reconcile.discrepancy_audit (discrepancy_id, actor, action, reason) "
        "SELECT id, 'reconcile-matcher', 'auto_resolved', why FROM closed",
        [ref.gateway for ref, _, _ in closes], [ref.reference for ref, _, _ in closes],
        [category for _, category, _ in closes], [why for _, _, why in closes])


async def lines_to_settle(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Up to `limit` unmatched settlement lines that a paid refund's reference accounts for, in line order,
    locked for the transaction; lines another matcher holds are skipped."""
    return await conn.fetch(
        "SELECT l.* FROM reconcile.settlement_lines l WHERE l.state = 'unmatched' AND EXISTS "
        f"(SELECT 1 FROM reconcile.payouts p WHERE {_SAME_REF}) "
        "ORDER BY l.id LIMIT $1 FOR UPDATE SKIP LOCKED", limit)


async def mark_missing_in_report(conn: asyncpg.Connection, sla_seconds: float) -> list[asyncpg.Record]:
    """Paid refunds still awaiting their settlement line `sla_seconds` after payment (up to 1000, skipping
    those another transaction holds), now in discrepancy `missing_in_report`; the payouts as updated."""
    return await conn.fetch(
        "UPDATE reconcile.payouts SET state = 'discrepancy', category = 'missing_in_report' "
        "WHERE refund_id IN (SELECT refund_id FROM reconcile.payouts WHERE state = 'awaiting' "
        "  AND paid_at < now() - make_interval(secs => $1) LIMIT 1000 FOR UPDATE SKIP LOCKED) RETURNING *",
        sla_seconds)


async def lines_missing_internally(conn: asyncpg.Connection, grace_seconds: float) -> list[asyncpg.Record]:
    """Up to 1000 unmatched settlement lines ingested more than `grace_seconds` ago that no paid refund
    accounts for and no discrepancy (open or closed) is about yet."""
    return await conn.fetch(
        "SELECT l.* FROM reconcile.settlement_lines l WHERE l.state = 'unmatched' "
        "AND l.ingested_at < now() - make_interval(secs => $1) "
        f"AND NOT EXISTS (SELECT 1 FROM reconcile.payouts p WHERE {_SAME_REF}) "
        "AND NOT EXISTS (SELECT 1 FROM reconcile.discrepancies d WHERE d.line_id = l.id) "  # resolved stays resolved
        "LIMIT 1000", grace_seconds)


async def lock_payouts(conn: asyncpg.Connection, refs: Iterable[domain.GatewayRef]
                       ) -> dict[domain.GatewayRef, asyncpg.Record]:
    """The paid refunds with these references, locked for the transaction (in one order, whoever locks them)."""
    refs = sorted(set(refs))
    rows = await conn.fetch(
        "SELECT p.* FROM reconcile.payouts p JOIN unnest($1::text[], $2::text[]) AS r(gateway, gateway_ref) "
        "  ON p.gateway = r.gateway AND p.gateway_ref = r.gateway_ref ORDER BY p.refund_id FOR UPDATE OF p",
        [ref.gateway for ref in refs], [ref.reference for ref in refs])
    return {domain.GatewayRef.of(row): row for row in rows}


async def settle(conn: asyncpg.Connection, settlements: Sequence[domain.Settlement], settled_at: datetime) -> None:
    """Write one round of settlements -- at most one per reference, so no two touch the same rows -- with one
    statement per kind of change: discrepancies closed, then opened; lines; payouts."""
    await close_automatically(conn, [(s.ref, category, why) for s in settlements for category, why in s.closes])
    await open_discrepancies(conn, [
        Opening(s.opens, None if s.duplicate else s.refund_id, s.ref, s.line_id, None if s.duplicate else s.expected,
                s.settled) for s in settlements if s.opens])
    kept = [s for s in settlements if not s.reverses]
    if kept:  # a duplicate keeps its line's fx_difference (it is not a match)
        await conn.execute(
            "UPDATE reconcile.settlement_lines l SET state = w.state, "
            "  fx_difference = coalesce(w.fx_difference, l.fx_difference) "
            "FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS w(id, state, fx_difference) WHERE l.id = w.id",
            [s.line_id for s in kept], [s.result.state for s in kept],
            [None if s.duplicate else s.result.fx_difference for s in kept])
    if reversals := [s for s in settlements if s.reverses]:
        # The money came back: the matched refund line no longer accounts for the payout.
        await conn.execute(
            "UPDATE reconcile.settlement_lines l SET state = 'reversed' "
            "FROM unnest($1::text[], $2::text[], $3::bigint[]) AS r(gateway, gateway_ref, id) "
            "WHERE l.gateway = r.gateway AND l.gateway_ref = r.gateway_ref AND (l.id = r.id OR l.state = 'matched')",
            [s.ref.gateway for s in reversals], [s.ref.reference for s in reversals], [s.line_id for s in reversals])
    if changed := [s for s in settlements if not s.duplicate]:
        await conn.execute(
            "UPDATE reconcile.payouts p SET state = w.state, category = w.category, settled_at = $4 "
            "FROM unnest($1::text[], $2::text[], $3::text[]) AS w(refund_id, state, category) "
            "WHERE p.refund_id = w.refund_id",
            [s.refund_id for s in changed], [s.result.state for s in changed], [s.result.category for s in changed],
            settled_at)


_PAID_COLUMNS = {"refund_id": "text", "gateway": "text", "gateway_ref": "text", "amount_value": "bigint",
                 "currency": "text", "channel": "text", "refund": "jsonb", "paid_at": "timestamptz",
                 "expected_value": "bigint", "expected_currency": "text", "traceparent": "text", "attempt": "int"}


def _insert_paid(**extra: str) -> str:
    """One INSERT of unnested paid rows (`_PAID_COLUMNS` in order), the `extra` columns set to SQL
    values; a refund recorded already stays as it is."""
    return (f"INSERT INTO reconcile.payouts ({', '.join([*_PAID_COLUMNS, *extra])}) "
            f"SELECT {', '.join(['*', *extra.values()])} FROM unnest({array_params(_PAID_COLUMNS.values())}) ON CONFLICT (refund_id) DO NOTHING")


_RECORD_PAID = _insert_paid()
_RECORD_PAID_OUTSIDE = _insert_paid(paid_outside="true", state="'discrepancy'",
                                    category="'paid_outside'") + " RETURNING *"


async def record_paid(conn: asyncpg.Connection, rows: Sequence[tuple]) -> None:
    """Record paid refunds, each (refund_id, gateway, gateway_ref, amount_value, currency, channel, refund,
    paid_at, expected_value, expected_currency, traceparent, attempt), in one statement; one recorded
    already stays as it is (a refund has at most one paid payout attempt)."""
    if rows:
        await conn.execute(_RECORD_PAID, *map(list, zip(*rows, strict=True)))


async def record_paid_outside(conn: asyncpg.Connection, rows: Sequence[tuple]) -> list[asyncpg.Record]:
    """Record refunds paid outside the pipeline (rows as `record_paid`'s), each in
    discrepancy `paid_outside` with that discrepancy opened, in two statements; return the payouts recorded
    now (one recorded already stays as it is, and opens nothing again)."""
    if not rows:
        return []
    recorded = await conn.fetch(_RECORD_PAID_OUTSIDE, *map(list, zip(*rows, strict=True)))
    await open_discrepancies(conn, [Opening(domain.PAID_OUTSIDE, row["refund_id"], domain.GatewayRef.of(row), None,
                                            (row["expected_value"], row["expected_currency"]), None)
                                    for row in recorded])
    return recorded


async def settlement_of(conn: asyncpg.Connection | asyncpg.Pool, refund_id: str
                        ) -> tuple[asyncpg.Record | None, list[asyncpg.Record], list[asyncpg.Record]]:
    """A refund's paid record, the settlement lines matched to it or bearing its reference, and its
    discrepancies (every state), for the settlement view."""
    payout = await conn.fetchrow("SELECT * FROM reconcile.payouts WHERE refund_id = $1", refund_id)
    lines = [] if payout is None else await conn.fetch(
        "SELECT l.*, r.received_at AS report_received_at FROM reconcile.settlement_lines l "
        "LEFT JOIN reconcile.settlement_reports r ON r.id = l.report_id "
        "WHERE l.gateway = $1 AND l.gateway_ref = $2 ORDER BY l.id", payout["gateway"], payout["gateway_ref"])
    discrepancies = await conn.fetch("SELECT * FROM reconcile.discrepancies WHERE refund_id = $1 ORDER BY id",
                                     refund_id)
    return payout, lines, discrepancies


_TERMS = ("paid", "matched", "open", "resolved", "awaiting", "reversed", "fx_difference")


async def ledger(conn: asyncpg.Connection) -> list[domain.Ledger]:
    """The invariant's terms per currency from the running totals (migration 0008), after folding in what
    changed since the last look: work proportional to the change, not to the history."""
    async with conn.transaction():
        await conn.execute(
            "WITH moved AS (DELETE FROM reconcile.ledger_deltas RETURNING currency, term, amount) "
            "INSERT INTO reconcile.ledger_totals (currency, term, amount) "
            "SELECT currency, term, sum(amount) FROM moved GROUP BY 1, 2 "
            "ON CONFLICT (currency, term) DO UPDATE SET amount = ledger_totals.amount + EXCLUDED.amount")
        rows = await conn.fetch("SELECT currency, term, amount::bigint AS amount FROM reconcile.ledger_totals")
    by_currency: dict[str, dict[str, int]] = {}
    for row in rows:
        by_currency.setdefault(row["currency"], dict.fromkeys(_TERMS, 0))[row["term"]] = row["amount"]
    return [domain.Ledger(currency, t["paid"], t["matched"], t["open"], t["resolved"], t["awaiting"], t["reversed"],
                          t["fx_difference"])
            for currency, t in sorted(by_currency.items()) if any(t.values())]


async def reset_ledger_totals(conn: asyncpg.Connection, entries: list[domain.Ledger]) -> None:
    """Replace the running totals with `entries` (recomputed from the tables), writers held off meanwhile."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE reconcile.payouts, reconcile.settlement_lines, reconcile.discrepancies "
                           "IN SHARE MODE")
        await conn.execute("DELETE FROM reconcile.ledger_deltas")
        await conn.execute("DELETE FROM reconcile.ledger_totals")
        await conn.executemany(
            "INSERT INTO reconcile.ledger_totals (currency, term, amount) VALUES ($1, $2, $3)",
            [(e.currency, term, value) for e in entries for term, value in (
                ("paid", e.paid), ("matched", e.matched_settled), ("open", e.open_discrepancies),
                ("resolved", e.resolved), ("awaiting", e.awaiting), ("reversed", e.reversed),
                ("fx_difference", e.fx_difference))])


async def sync_ledger_categories(conn: asyncpg.Connection, categories: frozenset[str]) -> bool:
    """Make the triggers count the code's payout-side categories; True if the set changed (recheck now)."""
    stored = {r["category"] for r in await conn.fetch("SELECT category FROM reconcile.ledger_payout_categories")}
    if stored == set(categories):
        return False
    async with conn.transaction():
        await conn.execute("DELETE FROM reconcile.ledger_payout_categories WHERE NOT category = ANY($1::text[])",
                           sorted(categories))
        await conn.execute("INSERT INTO reconcile.ledger_payout_categories SELECT unnest($1::text[]) "
                           "ON CONFLICT DO NOTHING", sorted(categories))
    return True


async def ledger_recomputed(conn: asyncpg.Connection | asyncpg.Pool) -> list[domain.Ledger]:
    """Each side of the invariant summed from its own table: payouts, matched lines, open discrepancies
    (the whole history: what the running totals are checked against)."""
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


async def open_discrepancy_counts(conn: asyncpg.Connection, categories: Iterable[str]) -> dict[str, int]:
    """How many discrepancies are open in each of `categories` (0 for a category with none)."""
    rows = await conn.fetch("SELECT c AS category, count(d.id) AS n FROM unnest($1::text[]) c "
                            "LEFT JOIN reconcile.discrepancies d ON d.category = c "
                            "AND d.status = 'open' GROUP BY c", list(categories))
    return {row["category"]: row["n"] for row in rows}


async def discrepancies(conn: asyncpg.Connection | asyncpg.Pool, *, status: str, category: str | None,
                        gateway: str | None, gateway_ref: str | None, limit: int) -> list[asyncpg.Record]:
    """The discrepancy queue: up to `limit` discrepancies with this status (and category, gateway and
    reference where given), oldest first."""
    return await conn.fetch(
        "SELECT * FROM reconcile.discrepancies WHERE status = $1 AND ($2::text IS NULL OR category = $2) "
        "AND ($3::text IS NULL OR gateway = $3) AND ($4::text IS NULL OR gateway_ref = $4) "
        "ORDER BY id LIMIT $5", status, category, gateway, gateway_ref, limit)


async def resolve_discrepancy(conn: asyncpg.Connection, discrepancy_id: int, *, closed_at: datetime,
                              resolved_by: str, reason: str) -> asyncpg.Record | None:
    """Close an open discrepancy as resolved by staff, with their reason; the discrepancy as closed, or None
    if no open discrepancy has that id."""
    return await conn.fetchrow(
        "UPDATE reconcile.discrepancies SET status = 'resolved', closed_at = $2, resolved_by = $3, "
        "resolution = $4 WHERE id = $1 AND status = 'open' RETURNING *",
        discrepancy_id, closed_at, resolved_by, reason)


async def discrepancy_status(conn: asyncpg.Connection, discrepancy_id: int) -> str | None:
    """The discrepancy's status (`open`, `resolved`, `auto_resolved`), or None if there is no such discrepancy."""
    return await conn.fetchval("SELECT status FROM reconcile.discrepancies WHERE id = $1", discrepancy_id)


async def audit_resolution(conn: asyncpg.Connection, discrepancy_id: int, *, actor: str, reason: str) -> None:
    """Record in the discrepancy's audit trail that `actor` resolved it, and why."""
    await conn.execute(
        "INSERT INTO reconcile.discrepancy_audit (discrepancy_id, actor, action, reason) "
        "VALUES ($1, $2, 'resolved', $3)", discrepancy_id, actor, reason)


async def resolve_payout(conn: asyncpg.Connection, refund_id: str, ref: domain.GatewayRef, *,
                         settled_at: datetime) -> asyncpg.Record | None:
    """The paid refund a resolved discrepancy is about, on the gateway reference it names, marked resolved
    (its money counts as resolved); the payout as updated, or None if it is not in discrepancy."""
    return await conn.fetchrow(
        "UPDATE reconcile.payouts SET state = 'resolved', settled_at = $2 WHERE refund_id = $1 "
        "AND gateway = $3 AND gateway_ref = $4 AND state = 'discrepancy' RETURNING *",
        refund_id, settled_at, *ref)
