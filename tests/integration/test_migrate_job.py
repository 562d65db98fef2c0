"""The Kubernetes init container's command migrates a service's schema on a real PostgreSQL, idempotently."""

import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


def migrate(dsn: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.runtime.migrate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"DATABASE_URL": dsn, "PATH": "/usr/bin:/bin"})


async def test_init_container_command_migrates_an_empty_database_once(stack, db):
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    await db.execute(f'CREATE DATABASE "{name}"')
    fresh = urlunsplit(urlsplit(stack.dsn)._replace(path=f"/{name}"))
    try:
        first = migrate(fresh, "notify", "services/notify/migrations")
        assert first.returncode == 0, first.stderr
        # The shared stage tables plus notify's own files (counted, so a new migration does not break this).
        expected = len(list((ROOT / "shared/runtime/migrations").glob("*.sql"))) + len(list((ROOT / "services/notify/migrations").glob("*.sql")))
        assert f"notify: applied {expected} migration(s)" in first.stdout
        conn = await asyncpg.connect(fresh)
        try:
            assert await conn.fetchval("SELECT to_regclass('notify.refund_status') IS NOT NULL")
            assert await conn.fetchval("SELECT to_regclass('notify.inbox') IS NOT NULL")
        finally:
            await conn.close()
        again = migrate(fresh, "notify", "services/notify/migrations")
        assert again.returncode == 0 and "none pending" in again.stdout

        missing = migrate(fresh, "notify", "services/notify/no-such-folder")
        assert missing.returncode == 2 and "no migrations folder" in missing.stderr
    finally:
        await db.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
