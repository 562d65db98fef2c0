"""Reconcile's migration to (gateway, gateway_ref) on a database that already holds data."""

import shutil
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from shared.runtime.db import apply_migrations
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration
MIGRATIONS = ROOT / "services" / "reconcile" / "migrations"
SCOPED = "0005_gateway_scoped_refs"


async def test_existing_rows_keep_their_gateway_and_a_reference_is_unique_per_gateway(stack, db, tmp_path):
    name = f"reconcile_{uuid.uuid4().hex[:8]}"
    await db.execute(f'CREATE DATABASE "{name}"')
    fresh = urlunsplit(urlsplit(stack.dsn)._replace(path=f"/{name}"))
    before = tmp_path / "before"
    before.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.stem < SCOPED:
            shutil.copy(path, before / path.name)
    try:
        await apply_migrations(fresh, "reconcile", before)
        conn = await asyncpg.connect(fresh)
        try:
            await conn.execute(
                "INSERT INTO reconcile.payouts (refund_id, gateway, gateway_ref, amount_value, currency, channel, "
                "refund, paid_at, expected_value, expected_currency, state) "
                "VALUES ('rf_1', 'stripe', 're_1', 2500, 'EUR', 'card', '{}', $1, 2500, 'EUR', 'discrepancy')",
                datetime.now(UTC))
            line_id = await conn.fetchval(
                "INSERT INTO reconcile.settlement_lines (gateway, txn_id, gateway_ref, amount_value, currency, "
                "fee_value) VALUES ('adyen', 'txn_1', 're_2', 900, 'EUR', 0) RETURNING id")
            await conn.execute(
                "INSERT INTO reconcile.discrepancies (category, refund_id, gateway_ref, line_id) VALUES "
                "('missing_in_report', 'rf_1', 're_1', NULL), ('missing_internally', NULL, 're_2', $1)", line_id)

            later = sorted(path.stem for path in MIGRATIONS.glob("*.sql") if path.stem >= SCOPED)
            assert await apply_migrations(fresh, "reconcile", MIGRATIONS) == later
            rows = await conn.fetch("SELECT category, gateway, gateway_ref FROM reconcile.discrepancies ORDER BY id")
            assert [tuple(r) for r in rows] == [("missing_in_report", "stripe", "re_1"),
                                                ("missing_internally", "adyen", "re_2")]
            insert = ("INSERT INTO reconcile.payouts (refund_id, gateway, gateway_ref, amount_value, currency, "
                      "channel, refund, paid_at, expected_value, expected_currency) "
                      "VALUES ($1, $2, 're_1', 100, 'EUR', 'card', '{}', now(), 100, 'EUR')")
            await conn.execute(insert, "rf_2", "adyen")  # the same reference from another gateway
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(insert, "rf_3", "stripe")
        finally:
            await conn.close()
    finally:
        await db.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
