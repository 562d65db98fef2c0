"""The database enforces the boundaries: each service's role reaches only its own schema, and no
service's role can read or write the gateway simulator's ledger (an external system's)."""

import asyncpg
import pytest

pytestmark = pytest.mark.integration
SERVICES = ["intake", "approval", "payout", "reconcile", "notify"]


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_role_cannot_touch_the_simulators_ledger_or_another_stage(stack, service):
    conn = await asyncpg.connect(stack.dsn_of(service))
    try:
        assert await conn.fetchval(f"SELECT count(*) >= 0 FROM {service}.schema_migrations")
        for table in ("gateway_sim.refunds", "gateway_sim.payments", "gateway_sim.settlement_lines"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetchval(f"SELECT count(*) FROM {table}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE gateway_sim.refunds SET status = 'succeeded'")
        other = next(s for s in SERVICES if s != service)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval(f"SELECT count(*) FROM {other}.inbox")
    finally:
        await conn.close()


async def test_the_simulator_role_cannot_read_the_pipeline(stack):
    conn = await asyncpg.connect(stack.dsn_of("gatewaysim"))
    try:
        assert await conn.fetchval("SELECT count(*) >= 0 FROM gateway_sim.refunds")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT count(*) FROM payout.payouts")
    finally:
        await conn.close()
