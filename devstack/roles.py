"""One PostgreSQL role per schema: each service (and the gateway simulator) owns its own schema and
has no grant on anyone else's, so "no service reads another's tables" is enforced by the database.

devstack connects as the cluster's superuser to create the roles and schemas, then runs each schema's
migrations as its role (so the role owns its tables), and hands each process a DSN with its own role.
"""

from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

SIMULATOR_SCHEMA = "gateway_sim"


def role_of(schema: str) -> str:
    return SIMULATOR_SCHEMA if schema == SIMULATOR_SCHEMA else f"refund_{schema}"


def dsn_as(dsn: str, role: str, password: str) -> str:
    """`dsn` with its user and password replaced by the role's."""
    parts = urlsplit(dsn)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(role)}:{quote(password)}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# What a schema may hold that a previous devstack (everything owned by the superuser) left behind.
_OWNED = """
SELECT c.relname AS name, CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
       WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END AS kind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'S', 'v', 'm') AND pg_get_userbyid(c.relowner) <> $2
  AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'a'))
"""
_FUNCTIONS = """
SELECT p.oid::regprocedure::text AS signature FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = $1 AND pg_get_userbyid(p.proowner) <> $2
"""


async def ensure_roles(superuser_dsn: str, passwords: dict[str, str]) -> None:
    """For each schema in `passwords`: a login role with that password owning the schema and all in it."""
    conn = await asyncpg.connect(superuser_dsn)
    try:
        for schema, password in passwords.items():
            role = role_of(schema)
            verb = "ALTER" if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role) else "CREATE"
            await conn.execute(f"{verb} ROLE {_ident(role)} LOGIN PASSWORD {_literal(password)}")
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(schema)} AUTHORIZATION {_ident(role)}")
            await conn.execute(f"ALTER SCHEMA {_ident(schema)} OWNER TO {_ident(role)}")
            for row in await conn.fetch(_OWNED, schema, role):
                await conn.execute(f"ALTER {row['kind']} {_ident(schema)}.{_ident(row['name'])} OWNER TO {_ident(role)}")
            for row in await conn.fetch(_FUNCTIONS, schema, role):
                await conn.execute(f"ALTER FUNCTION {row['signature']} OWNER TO {_ident(role)}")
    finally:
        await conn.close()
