"""`make bench --preload-sql N`: N reconciled refunds' worth of history written straight into every table
the pipeline writes for one, with `INSERT … SELECT … FROM generate_series` (no Kafka, no services), so
a bench step can be measured against realistic table and index sizes in minutes instead of days.

What one preloaded refund leaves is what the real pipeline leaves for a card refund the policy approves
without a person, paid by the `sim` gateway (Stripe personality) and matched in its settlement report
(rows read back from a bench refund on the devstack; the column values and JSON shapes follow the
INSERTs in each services/*/store.py and handlers.py):

- intake: the ticket (accepted, its refund.accepted.v1 CloudEvent kept as bytes, deadlines), the
  payment's balance (captured = refunded: a full refund), the inbox row of the request event;
- approval: the decision (approved by `auto-approve-standard`), the customer history row, the inbox
  row of the accepted event (the verification row is deleted once verified; no review, no audit);
- payout: the payout (succeeded, gateway ref, claim token and timestamps as the last claim left them),
  the inbox row of the approved event (the sim account sends no webhooks: no gateway_events);
- reconcile: the paid refund (matched), its settlement line (matched), one settlement report per 100
  lines, the inbox row of the paid event;
- notify: the status row (reconciled, timeline, stage done, sequence 5), four `sent` notifications
  (received, approved, paid, completed) for the one customer in five who has an email, and the inbox
  rows of the five events it folded (accepted, approved, submitted, paid, reconciled);
- gateway_sim: the payment, the refund, its settlement line, the Stripe idempotency record, and one
  report run per reconcile report (its content is the header only: nothing re-reads it).

Ids cannot collide with live refunds: request ids `preload-<i>`, payments `pi_preload_<i>`, customers
`cus-preload-<k>`, gateway refs `re_pl…`, refund ids `rf_` + md5 (32 hex, as shared/contract/ids.py's uuid5
hex; uuid5 needs sha1, which PostgreSQL has only as an extension). Customers: N/5 of them, so each has
~5 refunds for approval's velocity/history lookups. Currencies USD/EUR/GBP/JPY/CAD with their regions,
amounts 5.00-499.99 (JPY: 500-49,999 yen). Refund timestamps spread evenly over the last 30 days;
inbox rows over the last 6 days (inside the 8-day inbox retention, so pruning leaves them alone).

Chunks of `chunk` refunds, each in one transaction (a temporary table of the chunk's derived values,
then one INSERT per table): a chunk whose last ticket exists is skipped, so running it again (same N)
loads nothing and an interrupted preload resumes. Indexes stay; every table is ANALYZEd at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

SOURCE = "bench-platform"
POLICY_VERSION = "2026.11-1"
REPORT_LINES = 100  # settlement lines per (reconcile, simulator) report
SCHEMAS = ("intake", "approval", "payout", "reconcile", "notify", "gateway_sim")
DEFAULT_CHUNK = 200_000


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """[lo, hi) ranges covering 0..total, each `size` long but the last; `size` is rounded up to a multiple
    of REPORT_LINES so no settlement report straddles two chunks."""
    if total <= 0:
        return
    size = max(REPORT_LINES, -(-size // REPORT_LINES) * REPORT_LINES)
    for lo in range(0, total, size):
        yield lo, min(lo + size, total)


def reports_in(lo: int, hi: int) -> int:
    """Settlement reports a chunk [lo, hi) holds (lo a multiple of REPORT_LINES)."""
    return -(-(hi - lo) // REPORT_LINES)


def seq_scan_deltas(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, dict]:
    """Per table (schema.name): sequential scans and rows they read between two pg_stat_user_tables
    snapshots ({table: (seq_scan, seq_tup_read)}), only the tables scanned, most rows read first."""
    found = {}
    for table, (scans, rows) in after.items():
        scans0, rows0 = before.get(table, (0, 0))
        if scans > scans0:
            found[table] = {"seq_scan": scans - scans0, "seq_tup_read": rows - rows0}
    return dict(sorted(found.items(), key=lambda kv: (-kv[1]["seq_tup_read"], kv[0])))


async def seq_scan_snapshot(conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    rows = await conn.fetch("SELECT schemaname || '.' || relname AS t, seq_scan, seq_tup_read FROM pg_stat_user_tables "
                            "WHERE schemaname = ANY($1::text[])", list(SCHEMAS))
    return {r["t"]: (r["seq_scan"], r["seq_tup_read"]) for r in rows}


async def wal_snapshot(conn: asyncpg.Connection) -> dict[str, int]:
    """The cluster's WAL so far: bytes (the insert position, exact), records and full-page images
    (pg_stat_wal); the simulator's writes included (it shares the cluster). A backend adds its counts to
    pg_stat_wal at most once a second, so this connection's own are flushed first; other backends' last
    second may be missing, small against a bench step, not against a sub-second run."""
    await conn.execute("SELECT pg_stat_force_next_flush()")  # applied as the statement ends
    row = await conn.fetchrow("SELECT wal_records, wal_fpi, "
                              "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal_bytes FROM pg_stat_wal")
    return dict(row)


def wal_per_unit(before: dict[str, int], after: dict[str, int], units: int) -> dict[str, float]:
    """WAL written between two snapshots per refund: kB, records, full-page images."""
    units = max(units, 1)
    return {"kb": (after["wal_bytes"] - before["wal_bytes"]) / 1024 / units,
            "records": (after["wal_records"] - before["wal_records"]) / units,
            "fpi": (after["wal_fpi"] - before["wal_fpi"]) / units}


def _iso(column: str) -> str:
    """An RFC 3339 UTC timestamp as pydantic dumps it (…Z)."""
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


def _iso_offset(column: str) -> str:
    """As Python's isoformat() (…+00:00): the timeline's and the ticket's deadlines'."""
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"


def _uuid7(at: str, seed: str) -> str:
    """SQL for a version 7 UUID's text made at time `at`, its random bits from md5(`seed`): event ids as
    shared/contract/envelope.py's new_event_id() makes them, so the preloaded inboxes are ordered as live ones."""
    ms = f"lpad(to_hex((extract(epoch FROM {at}) * 1000)::bigint), 12, '0')"
    rand = f"md5({seed})"
    return (f"(substr({ms}, 1, 8) || '-' || substr({ms}, 9, 4) || '-7' || substr({rand}, 1, 3) || '-' || "
            f"substr('89ab', 1 + get_byte(decode({rand}, 'hex'), 2) % 4, 1) || substr({rand}, 5, 3) || '-' || "
            f"substr({rand}, 9, 12))")


# One row per refund of the chunk: $1 lo, $2 hi, $3 N, $4 first simulator line id, $5 first report id.
_CHUNK = f"""
CREATE TEMPORARY TABLE pl ON COMMIT DROP AS
WITH base AS (
  SELECT i, md5('preload:' || i) AS hex, 'preload-' || i AS req, 'pi_preload_' || i AS pay,
         'cus-preload-' || (i % greatest($3::bigint / 5, 1)) AS cus,
         (ARRAY['USD','EUR','USD','GBP','JPY','USD','EUR','CAD'])[1 + (i % 8)::int] AS cur,
         ('x' || substr(md5('amount:' || i), 1, 8))::bit(32)::bigint AS h,
         now() - interval '30 days' - interval '10 minutes' + (i + 0.5) * interval '30 days' / $3 AS t,
         now() - interval '6 days' - interval '10 minutes' + (i + 0.5) * interval '6 days' / $3 AS inbox_t
  FROM generate_series($1::bigint, $2::bigint - 1) AS i),
v AS (
SELECT i, 'rf_' || hex AS rid, 'po_' || hex AS poid, req, 'ord-preload-' || i AS ord, pay, cus, cur,
       CASE cur WHEN 'USD' THEN 'US' WHEN 'EUR' THEN 'DE' WHEN 'GBP' THEN 'GB' WHEN 'JPY' THEN 'JP' ELSE 'CA' END
         AS region,
       500 + h % 49500 AS amt,
       i % 5 = 0 AS has_email,
       'ch_' || left(encode(sha256(convert_to(pay, 'UTF8')), 'hex'), 24) AS charge,
       're_pl' || left(md5('gref:' || i), 22) AS gref,
       $4::bigint + (i - $1) AS gs_line, $5::bigint + (i - $1) / {REPORT_LINES} AS report_id,
       ((i - $1) % {REPORT_LINES})::int + 2 AS line_no,
       t - interval '1 day' AS captured_at, t AS requested_at, t + interval '2.8 s' AS received_at,
       t + interval '2.83 s' AS accepted_at, t + interval '3.1 s' AS decided_at, t + interval '3.12 s' AS approved_at,
       t + interval '3.2 s' AS created_at, t + interval '4.2 s' AS claimed_at, t + interval '4.3 s' AS sim_at,
       t + interval '4.5 s' AS paid_at, t + interval '8 s' AS ingested_at, t + interval '8.1 s' AS settled_at,
       t + interval '8.4 s' AS reconciled_at, date_trunc('day', t + interval '7 days') + interval '17 hours' AS eta,
       inbox_t,
       t + interval '2.92 s' AS seen_accepted, t + interval '3.25 s' AS seen_approved,
       t + interval '4.35 s' AS seen_processing, t + interval '5.2 s' AS seen_succeeded,
       t + interval '32.8 s' AS due_intake, t + interval '4 h 32.8 s' AS due_approval,
       t + interval '1 day 4 h 32.8 s' AS due_payout, t + interval '4 days 4 h 32.8 s' AS due_reconcile,
       t + interval '4 days 4 h 15 min 32.8 s' AS due_notify,
       {_uuid7("inbox_t - interval '10 ms'", "'ev:req:' || i")} AS ev_req,
       {_uuid7("inbox_t + interval '40 ms'", "'ev:acc:' || i")} AS ev_acc,
       {_uuid7("inbox_t + interval '90 ms'", "'ev:appr:' || i")} AS ev_appr,
       {_uuid7("inbox_t + interval '1.1 s'", "'ev:sub:' || i")} AS ev_sub,
       {_uuid7("inbox_t + interval '1.3 s'", "'ev:paid:' || i")} AS ev_paid,
       {_uuid7("inbox_t + interval '5.4 s'", "'ev:rec:' || i")} AS ev_rec,
       md5('claim:' || i)::uuid AS claim_token
FROM base)
SELECT v.*, dl.deadlines, cu.customer, ac.accepted FROM v
CROSS JOIN LATERAL (SELECT jsonb_build_object(
    'intake', {_iso('due_intake')}, 'approval', {_iso('due_approval')},
    'payout', {_iso('due_payout')},
    'reconcile', {_iso('due_reconcile')},
    'notify', {_iso('due_notify')}) AS deadlines) dl
CROSS JOIN LATERAL (SELECT jsonb_build_object('id', cus, 'email', CASE WHEN has_email THEN cus || '@example.com' END,
                                'phone', NULL, 'locale', 'en') AS customer) cu
CROSS JOIN LATERAL (SELECT jsonb_build_object(
  'refund_id', rid, 'request_id', req, 'source', '{SOURCE}', 'order_id', ord,
  'amount', jsonb_build_object('value', amt, 'currency', cur), 'channel', 'card', 'region', region,
  'reason_codes', '[]'::jsonb, 'drill', false,
  'payment', jsonb_build_object('id', pay, 'gateway', 'sim', 'channel', 'card',
                                'captured', jsonb_build_object('value', amt, 'currency', cur),
                                'captured_at', {_iso('captured_at')}),
  'customer', jsonb_build_object('id', cus, 'email', NULL, 'phone', NULL, 'locale', 'en', 'contact_sealed', NULL),
  'reason', 'returned', 'note', NULL, 'requested_at', {_iso('requested_at')},
  'accepted_at', {_iso('accepted_at')}, 'items', NULL, 'metadata', '{{"preload": "sql"}}'::jsonb,
  'deadlines', dl.deadlines) AS accepted) ac;
"""

# (table, INSERT … SELECT … FROM pl): one statement per table per chunk.
_INSERTS: list[tuple[str, str]] = [
    ("gateway_sim.payments",
     "INSERT INTO gateway_sim.payments (account, id, charge_id, amount_value, currency, created_at) "
     "SELECT 'sim', pay, charge, amt, cur, captured_at FROM pl ON CONFLICT DO NOTHING"),
    ("gateway_sim.refunds",
     "INSERT INTO gateway_sim.refunds (account, idempotency_key, gateway_ref, payment_id, amount_value, currency, "
     "status, settle_value, settle_currency, fee_value, channel, personality, metadata, created_at) "
     "SELECT 'sim', rid, gref, pay, amt, cur, 'succeeded', amt, cur, 0, 'card', 'stripe', "
     "jsonb_build_object('channel', 'card', 'refund_key', rid), sim_at FROM pl ORDER BY i ON CONFLICT DO NOTHING"),
    ("gateway_sim.settlement_lines",
     "INSERT INTO gateway_sim.settlement_lines (id, account, gateway_ref, amount_value, currency, fee_value, kind, "
     "settled_at) SELECT gs_line, 'sim', gref, amt, cur, 0, 'refund', sim_at + interval '70 ms' FROM pl "
     "ON CONFLICT DO NOTHING"),
    ("gateway_sim.idempotency_keys",
     "INSERT INTO gateway_sim.idempotency_keys (account, key, fingerprint, status_code, body, created_at) "
     "SELECT 'sim', rid, jsonb_build_array('POST', '/sim/v1/refunds', jsonb_build_object('amount', amt::text, "
     "'metadata', jsonb_build_object('channel', 'card', 'refund_key', rid), 'payment_intent', pay))::text, 200, "
     "jsonb_build_object('id', gref, 'object', 'refund', 'amount', amt, 'currency', lower(cur), "
     "'payment_intent', pay, 'charge', charge, 'status', 'succeeded', 'failure_reason', NULL, "
     "'metadata', jsonb_build_object('channel', 'card', 'refund_key', rid), "
     "'created', extract(epoch FROM sim_at)::bigint, 'balance_transaction', NULL, 'reason', NULL, "
     "'receipt_number', NULL)::text, sim_at - interval '8 ms' FROM pl ON CONFLICT DO NOTHING"),
    ("gateway_sim.report_runs",
     "INSERT INTO gateway_sim.report_runs (account, id, file_id, report_type, interval_start, interval_end, "
     "content, created_at) SELECT 'sim', 'frr_pl' || left(md5('run:' || report_id), 22), "
     "'file_pl' || left(md5('file:' || report_id), 22), 'balance_change_from_activity.itemized.1', "
     "date_trunc('second', min(sim_at)), date_trunc('second', max(sim_at)) + interval '1 s', $1, "
     "max(ingested_at) - interval '50 ms' FROM pl GROUP BY report_id ON CONFLICT DO NOTHING"),
    ("intake.payment_balances",
     "INSERT INTO intake.payment_balances (gateway, payment_id, currency, captured, refunded) "
     "SELECT 'sim', pay, cur, amt, amt FROM pl ON CONFLICT DO NOTHING"),
    ("intake.inbox",
     f"INSERT INTO intake.inbox (source, event_id, received_at) SELECT '{SOURCE}', ev_req, inbox_t FROM pl "
     "ON CONFLICT DO NOTHING"),
    ("approval.decisions",
     "INSERT INTO approval.decisions (refund_id, decision, policy_version, rule_ids, channel, accepted_at, "
     f"decided_at, decided_by) SELECT rid, 'approved', '{POLICY_VERSION}', ARRAY['auto-approve-standard'], 'card', "
     "accepted_at, decided_at, 'policy' FROM pl ON CONFLICT DO NOTHING"),
    ("approval.customer_refunds",
     "INSERT INTO approval.customer_refunds (refund_id, customer_key, currency, amount_value, accepted_at) "
     f"SELECT rid, '{SOURCE}/' || cus, cur, amt, accepted_at FROM pl ON CONFLICT DO NOTHING"),
    ("approval.inbox",
     "INSERT INTO approval.inbox (source, event_id, received_at) "
     "SELECT 'refund-pipeline/intake', ev_acc, inbox_t + interval '50 ms' FROM pl ON CONFLICT DO NOTHING"),
    ("payout.payouts",
     "INSERT INTO payout.payouts (refund_id, payout_id, idempotency_key, status, gateway, payment_id, amount_value, "
     "currency, channel, refund, attempts, gateway_ref, approved_at, claimed_at, created_at, finished_at, "
     "next_attempt_at, recovered_by_lookup, eta, error_attempts, claim_token) "
     "SELECT rid, poid, rid, 'succeeded', 'sim', pay, amt, cur, 'card', accepted || jsonb_build_object("
     f"'reason_codes', jsonb_build_array('auto-approve-standard'), 'policy_version', '{POLICY_VERSION}', "
     f"'approved_at', {_iso('approved_at')}), 1, gref, approved_at, claimed_at, created_at, paid_at, created_at, "
     "false, eta, 0, claim_token FROM pl ON CONFLICT DO NOTHING"),
    ("payout.inbox",
     "INSERT INTO payout.inbox (source, event_id, received_at) "
     "SELECT 'refund-pipeline/approval', ev_appr, inbox_t + interval '100 ms' FROM pl ON CONFLICT DO NOTHING"),
    ("reconcile.settlement_reports",
     "INSERT INTO reconcile.settlement_reports (id, gateway, format, sha256, received_from, rows_total, lines_new, "
     "lines_known, ignored, errors, received_at) "
     "SELECT report_id, 'sim', 'stripe', encode(sha256(convert_to('preload-report:' || report_id, 'UTF8')), 'hex'), "
     "'pull:frr_pl' || left(md5('run:' || report_id), 22) || '/file_pl' || left(md5('file:' || report_id), 22), "
     "count(*), count(*), 0, '[]'::jsonb, '[]'::jsonb, max(ingested_at) FROM pl GROUP BY report_id "
     "ON CONFLICT DO NOTHING"),
    ("reconcile.settlement_lines",
     "INSERT INTO reconcile.settlement_lines (gateway, txn_id, line_no, gateway_ref, kind, amount_value, currency, "
     "fee_value, ingested_at, report_id, state) "
     "SELECT 'sim', 'txn_' || left(encode(sha256(convert_to(gs_line || ':refund', 'UTF8')), 'hex'), 24), line_no, "
     "gref, 'refund', amt, cur, 0, ingested_at, report_id, 'matched' FROM pl ORDER BY i ON CONFLICT DO NOTHING"),
    ("reconcile.payouts",
     "INSERT INTO reconcile.payouts (refund_id, gateway, gateway_ref, amount_value, currency, channel, refund, state, "
     "category, paid_at, settled_at, expected_value, expected_currency) "
     "SELECT rid, 'sim', gref, amt, cur, 'card', jsonb_build_object('refund_id', rid, 'request_id', req, "
     f"'source', '{SOURCE}', 'order_id', ord, 'amount', accepted -> 'amount', 'channel', 'card', 'region', region, "
     "'reason_codes', '[]'::jsonb, 'drill', false, 'gateway', 'sim', 'payout_id', poid, 'gateway_ref', gref, "
     f"'paid_at', {_iso('paid_at')}, 'eta', {_iso('eta')}, 'settlement_amount', NULL), 'matched', 'matched', "
     "paid_at, settled_at, amt, cur FROM pl ON CONFLICT DO NOTHING"),
    ("reconcile.inbox",
     "INSERT INTO reconcile.inbox (source, event_id, received_at) "
     "SELECT 'refund-pipeline/payout', ev_paid, inbox_t + interval '1.4 s' FROM pl ON CONFLICT DO NOTHING"),
    ("notify.refund_status",
     "INSERT INTO notify.refund_status (refund_id, request_id, source, order_id, status, amount, channel, "
     "reason_codes, eta, timeline, created_at, updated_at, customer, drill, inquiries, deadlines, stage, stage_rank, "
     "entered_at, accepted_at, sequence) "
     f"SELECT rid, req, '{SOURCE}', ord, 'reconciled', accepted -> 'amount', 'card', '{{}}', eta, "
     f"jsonb_build_object('accepted', {_iso_offset('seen_accepted')}, "
     f"'approved', {_iso_offset('seen_approved')}, "
     f"'processing', {_iso_offset('seen_processing')}, "
     f"'succeeded', {_iso_offset('seen_succeeded')}, "
     f"'reconciled', {_iso_offset('reconciled_at')}), seen_accepted - interval '3 ms', reconciled_at, customer, "
     "false, 0, deadlines, 'done', 4, reconciled_at, accepted_at, 5 FROM pl ON CONFLICT DO NOTHING"),
    ("notify.notifications",
     "INSERT INTO notify.notifications (refund_id, milestone, channel, recipient, locale, context, state, attempts, "
     "next_attempt_at, created_at, sent_at) "
     "SELECT rid, m.milestone, 'email', cus || '@example.com', 'en', jsonb_build_object('status', m.status, "
     f"'eta', CASE WHEN m.seq >= 3 THEN {_iso_offset('eta')} END, 'reason_codes', "
     "CASE WHEN m.status = 'approved' THEN '[\"auto-approve-standard\"]'::jsonb ELSE '[]'::jsonb END, "
     "'sequence', m.seq), 'sent', 1, at, at, at + interval '200 ms' "
     "FROM pl CROSS JOIN LATERAL (VALUES ('received', 'accepted', 1, seen_accepted), ('approved', 'approved', 2, seen_approved), "
     "('paid', 'succeeded', 4, seen_succeeded), ('completed', 'reconciled', 5, reconciled_at)) "
     "AS m(milestone, status, seq, at) WHERE has_email ON CONFLICT DO NOTHING"),
    ("notify.inbox",
     "INSERT INTO notify.inbox (source, event_id, received_at) "
     "SELECT e.source, e.event_id, inbox_t + e.after FROM pl CROSS JOIN LATERAL (VALUES "
     "('refund-pipeline/intake', ev_acc, interval '60 ms'), ('refund-pipeline/approval', ev_appr, interval '110 ms'), "
     "('refund-pipeline/payout', ev_sub, interval '1.2 s'), ('refund-pipeline/payout', ev_paid, interval '1.5 s'), "
     "('refund-pipeline/reconcile', ev_rec, interval '5.5 s')) AS e(source, event_id, after) "
     "ON CONFLICT DO NOTHING"),
    # Last: the chunk's marker (a chunk whose last ticket exists is done).
    ("intake.tickets",
     "INSERT INTO intake.tickets (refund_id, source, request_id, outcome, payment_key, payment_gateway, payment_id, "
     "amount_value, currency, channel, region, outcome_topic, outcome_key, outcome_value, outcome_headers, "
     "received_at, decided_at, request_hash, deadlines) "
     f"SELECT rid, '{SOURCE}', req, 'accepted', 'sim/' || pay, 'sim', pay, amt, cur, 'card', region, "
     "'refunds.accepted', rid, convert_to(jsonb_build_object('id', ev_acc, 'source', 'refund-pipeline/intake', "
     "'type', 'refund.accepted.v1', 'specversion', '1.0', "
     f"'time', {_iso('accepted_at')}, 'datacontenttype', 'application/json', 'data', accepted)::text, 'UTF8'), "
     "'{\"content-type\": \"application/cloudevents+json\"}'::jsonb, received_at, accepted_at, "
     "encode(sha256(convert_to('request:' || req, 'UTF8')), 'hex'), jsonb_build_object("
     f"'intake', {_iso_offset('due_intake')}, "
     f"'approval', {_iso_offset('due_approval')}, "
     f"'payout', {_iso_offset('due_payout')}, "
     f"'reconcile', {_iso_offset('due_reconcile')}, "
     f"'notify', {_iso_offset('due_notify')}) "
     "FROM pl ON CONFLICT DO NOTHING"),
]


def _report_header() -> str:
    from gatewaysim.reports import render

    return render("stripe", [])


async def _reserve(conn: asyncpg.Connection, table: str, count: int) -> int:
    """The first of `count` consecutive ids taken from the table's id sequence (nobody else gets them)."""
    return await conn.fetchval(
        "SELECT setval(s, nextval(s) + $2 - 1) - $2 + 1 FROM pg_get_serial_sequence($1, 'id') AS s", table, count)


async def _chunk_done(conn: asyncpg.Connection, hi: int) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM intake.tickets WHERE refund_id = 'rf_' || md5('preload:' || $1::bigint)",
                                    hi - 1))


async def row_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows per table of the pipeline's schemas as the last ANALYZE counted them (no full scans)."""
    rows = await conn.fetch(
        "SELECT n.nspname || '.' || c.relname AS t, c.reltuples::bigint AS n FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname = ANY($1::text[]) "
        "ORDER BY 1", list(SCHEMAS))
    return {r["t"]: max(r["n"], 0) for r in rows}


async def preload_sql(admin_dsn: str, total: int, console: Console, chunk: int = DEFAULT_CHUNK) -> dict:
    """Write `total` reconciled refunds' history (see the module doc); returns timings and row counts."""
    started = time.monotonic()
    header = _report_header()
    conn = await asyncpg.connect(admin_dsn)
    loaded = skipped = 0
    per_table: dict[str, float] = {}
    try:
        await conn.execute("SET synchronous_commit = off")
        ranges = list(chunks(total, chunk))
        with Progress(TextColumn("[bold]preload-sql[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("refunds"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task("preload", total=total)
            for lo, hi in ranges:
                if await _chunk_done(conn, hi):
                    skipped += hi - lo
                    progress.advance(task, hi - lo)
                    continue
                async with conn.transaction():
                    gs_line = await _reserve(conn, "gateway_sim.settlement_lines", hi - lo)
                    report = await _reserve(conn, "reconcile.settlement_reports", reports_in(lo, hi))
                    at = time.monotonic()
                    await conn.execute(_CHUNK.replace("$1", str(int(lo))).replace("$2", str(int(hi)))
                                       .replace("$3", str(int(total))).replace("$4", str(int(gs_line)))
                                       .replace("$5", str(int(report))))
                    # Refunds of the chunk loaded before (an earlier, smaller N) keep the rows they have.
                    await conn.execute("DELETE FROM pl USING intake.tickets t WHERE t.refund_id = pl.rid")
                    per_table["(chunk values)"] = per_table.get("(chunk values)", 0.0) + time.monotonic() - at
                    for table, statement in _INSERTS:
                        at = time.monotonic()
                        await conn.execute(statement, *([header] if "$1" in statement else []))
                        per_table[table] = per_table.get(table, 0.0) + time.monotonic() - at
                loaded += hi - lo
                progress.advance(task, hi - lo)
        insert_s = time.monotonic() - started
        console.print(f"[bold]preload-sql[/]: {loaded} refunds written, {skipped} there already, "
                      f"{insert_s:.0f}s; ANALYZE…")
        at = time.monotonic()
        for schema in SCHEMAS:
            for table in await conn.fetch(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = $1 AND c.relkind = 'r'", schema):
                await conn.execute(f'ANALYZE "{schema}"."{table["relname"]}"')
        analyze_s = time.monotonic() - at
        counts = await row_counts(conn)
    finally:
        await conn.close()
    return {"refunds": total, "loaded": loaded, "skipped": skipped, "chunk": chunk,
            "insert_s": round(insert_s, 1), "analyze_s": round(analyze_s, 1),
            "seconds": round(time.monotonic() - started, 1),
            "per_table_s": {t: round(s, 1) for t, s in sorted(per_table.items(), key=lambda kv: -kv[1])},
            "row_counts": counts}
