"""Idempotency-Key semantics, Stripe's (the Adyen-shaped API follows the same).

The first request under a key claims it (committed at once, so a concurrent
one sees it in flight: 409). Its answer is stored in the same transaction as
its work, unless it is a 5xx, which is not stored: a retry runs again. Later
requests with the same fingerprint replay the stored answer; with another
fingerprint they are refused (400). A claim whose request died without an
answer (a crash) is taken over after a minute.
"""

from collections.abc import Awaitable, Callable
from typing import Literal

import asyncpg

from gatewaysim.web import Answer, ApiError

Refusal = Callable[[Literal["in_use", "mismatch"]], Answer]
Work = Callable[[asyncpg.Connection], Awaitable[Answer]]
_ABANDONED_AFTER_SECONDS = 60


async def _answered(conn: asyncpg.Connection, work: Work, refuses_before_writing: bool) -> Answer:
    try:
        if refuses_before_writing:  # nothing to undo when it refuses (and two statements fewer)
            return await work(conn)
        async with conn.transaction():  # a savepoint: a refused request leaves nothing behind but its answer
            return await work(conn)
    except ApiError as refused:
        return refused.answer


async def run(pool: asyncpg.Pool, account: str, key: str | None, fingerprint: str, work: Work,
              refuse: Refusal, *, refuses_before_writing: bool = False) -> Answer:
    """Run `work` in one transaction at most once per (account, key); without a key, every time.
    `refuses_before_writing`: `work` raises its ApiError before it writes anything, if it does."""
    if key is None:
        async with pool.acquire() as conn, conn.transaction():
            return await _answered(conn, work, refuses_before_writing)
    for _ in range(3):  # the holder of the key may release it (a 5xx) between our two reads
        claimed = await pool.fetchval(
            "INSERT INTO gateway_sim.idempotency_keys (account, key, fingerprint) VALUES ($1, $2, $3) "
            "ON CONFLICT (account, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, created_at = now() "
            "WHERE idempotency_keys.status_code IS NULL "
            "  AND idempotency_keys.created_at < now() - make_interval(secs => $4) RETURNING true",
            account, key, fingerprint, _ABANDONED_AFTER_SECONDS)
        if claimed:
            return await _run_claimed(pool, account, key, work, refuses_before_writing)
        first = await pool.fetchrow("SELECT fingerprint, status_code, body FROM gateway_sim.idempotency_keys "
                                    "WHERE account = $1 AND key = $2", account, key)
        if first is None:
            continue
        if first["fingerprint"] != fingerprint:
            return refuse("mismatch")
        if first["status_code"] is None:
            return refuse("in_use")
        return Answer(first["status_code"], first["body"].encode(), replayed=True)
    return refuse("in_use")


async def _run_claimed(pool: asyncpg.Pool, account: str, key: str, work: Work,
                       refuses_before_writing: bool) -> Answer:
    try:
        async with pool.acquire() as conn, conn.transaction():
            answer = await _answered(conn, work, refuses_before_writing)
            if answer.status < 500:
                await conn.execute("UPDATE gateway_sim.idempotency_keys SET status_code = $3, body = $4 "
                                   "WHERE account = $1 AND key = $2", account, key, answer.status, answer.body.decode())
    except BaseException:
        await _release(pool, account, key)
        raise
    if answer.status >= 500:
        await _release(pool, account, key)
    return answer


async def _release(pool: asyncpg.Pool, account: str, key: str) -> None:
    await pool.execute("DELETE FROM gateway_sim.idempotency_keys WHERE account = $1 AND key = $2 "
                       "AND status_code IS NULL", account, key)
