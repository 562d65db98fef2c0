"""Local stack manager: real Kafka (KRaft, from Maven Central jars), PostgreSQL
(distribution binaries), the five services and the operations console as OS processes, no Docker needed.

CLI:  python -m devstack up [--no-services] | down | status | restart <component> | env

API (e.g. a pytest session fixture):

    from devstack import Stack
    stack = Stack(run_dir=Path(".run/test"))
    stack.up(services=True)          # infra + topics + migrations + services (or ["intake"], or False)
    stack.bootstrap, stack.dsn       # where they are
    stack.kill_service("payout")     # SIGKILL, as in a crash
    stack.start_service("payout")    # same port as before
    stack.restart("kafka")           # or "postgres", "payout": same data and port; services reconnect
    stack.status()                   # rows: alive (the process) and ready (e.g. a service's /readyz)
    stack.down()                     # nothing it started is left running; the only call that deletes data

A component that is down (crashed, killed, stopped) comes back in `up` on its
existing data and port.

KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL in the environment mean "use this
existing Kafka / database instead of starting one".
"""

from .processes import StackError
from .stack import SERVICES, Stack

__all__ = ["SERVICES", "Stack", "StackError"]
