"""Local stack manager: real Kafka (KRaft, from Maven Central jars), PostgreSQL
(distribution binaries) and the five services as OS processes, no Docker needed.

CLI:  python -m devstack up [--no-services] | down | status | env

API (e.g. a pytest session fixture):

    from devstack import Stack
    stack = Stack(run_dir=Path(".run/test"))
    stack.up(services=True)          # infra + topics + migrations + services
    stack.bootstrap, stack.dsn       # where they are
    stack.kill_service("payout")     # SIGKILL, as in a crash
    stack.start_service("payout")    # same port as before
    stack.down()                     # nothing it started is left running

KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL in the environment mean "use this
existing Kafka / database instead of starting one".
"""

from .processes import StackError
from .stack import SERVICES, Stack

__all__ = ["SERVICES", "Stack", "StackError"]
