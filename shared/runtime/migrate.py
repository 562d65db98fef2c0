"""`python -m shared.runtime.migrate SCHEMA FOLDER`: apply one service's migrations, then exit.

Kubernetes runs this as the init container of every service pod, so the schema
is current before the new version serves (the services then run with
MIGRATE_ON_START=false). Reads DATABASE_URL like the services do.
"""

import asyncio
import sys
from pathlib import Path

from shared.runtime.db import apply_migrations
from shared.runtime.settings import DatabaseSettings


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m shared.runtime.migrate SCHEMA FOLDER", file=sys.stderr)
        return 2
    schema, folder = argv[0], Path(argv[1])
    if not folder.is_dir():
        print(f"no migrations folder at {folder}", file=sys.stderr)
        return 2
    ran = asyncio.run(apply_migrations(DatabaseSettings().database_url, schema, folder))
    print(f"{schema}: applied {len(ran)} migration(s): {', '.join(ran) or 'none pending'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
