"""A local PostgreSQL cluster from the distribution's binaries (Debian: postgresql-15), kept until `down`.

initdb and postgres refuse to run as root, so as root every server-side
command runs as the `postgres` system user. That user usually cannot traverse
the directory holding the repo (e.g. /root/...), so the data dir lives under
the system temp dir instead of the run dir, named after a hash of the run dir
so that two run dirs never share a cluster.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from .processes import StackError, run_sync, log_tail, pid_matches, terminate

DATABASE = "refunds"
PG_USER = "postgres"


def find_bindir() -> Path:
    """Highest installed /usr/lib/postgresql/<ver>/bin, else `pg_config --bindir`."""

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.name)) or (0,)

    candidates = [p for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").exists()]
    if candidates:
        return Path(max(candidates, key=version))
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and (bindir / "initdb").exists():
            return bindir
    raise StackError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql "
        "(or set DATABASE_URL to use an existing database)"
    )


def pg_root(run_dir: Path) -> Path:
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"refund-pg-{digest}"


def _as_server_user(argv: list[str]) -> list[str]:
    """Prefix with runuser when root: initdb/postgres exit with an error if euid is 0."""
    if os.geteuid() != 0:
        return argv
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        raise StackError(
            f"running as root needs the '{PG_USER}' system user to own the cluster: apt-get install postgresql"
        ) from None
    return ["runuser", "-u", PG_USER, "--", *argv]


def _chown_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(PG_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _run(argv: list[str], root: Path, what: str) -> str:
    """Run a server-side command; output goes via a file, not a pipe, because
    `pg_ctl start` leaves the postmaster running and it must not hold our pipe."""
    with tempfile.TemporaryFile() as out:
        result = subprocess.run(
            _as_server_user(argv), cwd=root, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        out.seek(0)
        text = out.read().decode(errors="replace")
    if result.returncode != 0:
        raise StackError(f"{what} failed (exit {result.returncode}):\n{text}")
    return text


def log_path(root: Path) -> Path:
    return root / "postgres.log"


def data_dir(root: Path) -> Path:
    return root / "data"


def markers(root: Path) -> tuple[str, ...]:
    """The postmaster's cmdline contains `-D <data dir>` as pg_ctl passed it."""
    return (str(data_dir(root)),)


def postmaster_pid(root: Path) -> int | None:
    try:
        return int((data_dir(root) / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def running_pid(root: Path) -> int | None:
    """The postmaster serving this data dir now: it may have been restarted under a new pid since we started it."""
    pid = postmaster_pid(root)
    return pid if pid_matches(pid, *markers(root)) else None


def initialised(root: Path) -> bool:
    return (data_dir(root) / "PG_VERSION").exists()


def configured_port(root: Path) -> int | None:
    """The port in the cluster's own postgresql.conf (the last setting wins, as in PostgreSQL)."""
    try:
        ports = re.findall(r"^port = (\d+)", (data_dir(root) / "postgresql.conf").read_text(), re.M)
    except OSError:
        return None
    return int(ports[-1]) if ports else None


def _configure(root: Path, port: int) -> None:
    # In the cluster's own config, not on pg_ctl's command line, so that any later
    # start (ours, or a `pg_ctl restart` by hand) comes back on the same port.
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": f"'{root / 'sock'}'",
        "max_connections": "200",
    }
    with open(data_dir(root) / "postgresql.conf", "a") as conf:
        conf.write("\n# devstack\n" + "".join(f"{key} = {value}\n" for key, value in settings.items()))


def _initdb(bindir: Path, root: Path) -> None:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    sock = root / "sock"
    sock.mkdir(exist_ok=True)
    for path in (root, sock):
        _chown_to_server_user(path)
    _run(
        [str(bindir / "initdb"), "-D", str(data_dir(root)), "--auth=trust", f"-U{PG_USER}",
         "--encoding=UTF8", "--locale=C"],
        root, "initdb",
    )


def start(root: Path, port: int) -> int:
    """Start the cluster in `root`, first creating it on 127.0.0.1:<port> if there is none. Returns the pid.

    An existing cluster is started as it is, on its own port; initdb never runs
    over it, because its tables are the data a restart must bring back.
    """
    bindir = find_bindir()
    if not initialised(root):
        _initdb(bindir, root)
    if configured_port(root) is None:  # a new cluster, or one from a devstack that passed -p to pg_ctl
        _configure(root, port)
    if running_pid(root) is None:
        # Lock files a crash left behind name the dead postmaster's pid. PostgreSQL
        # ignores them only once that pid is gone, and a zombie nobody reaps (as under
        # some container inits) never goes. Safe to drop: the socket dir is this
        # cluster's own, and the shared-memory interlock still refuses to start while
        # any old backend lives on.
        for lock in (data_dir(root) / "postmaster.pid", *(root / "sock").glob(".s.PGSQL.*.lock")):
            lock.unlink(missing_ok=True)
    try:
        _run([str(bindir / "pg_ctl"), "-D", str(data_dir(root)), "-l", str(log_path(root)), "-w", "-t", "60",
              "start"], root, "pg_ctl start")
    except StackError as exc:
        raise StackError(f"{exc}\ntail of {log_path(root)}:\n{log_tail(log_path(root))}") from None
    pid = postmaster_pid(root)
    if pid is None:
        raise StackError(f"PostgreSQL started but {data_dir(root)}/postmaster.pid is unreadable")
    return pid


def dsn_for(port: int, database: str = DATABASE) -> str:
    return f"postgresql://{PG_USER}@127.0.0.1:{port}/{database}"


async def _connect_and_create(dsn: str, create: str | None, timeout_s: float) -> None:
    conn = await asyncpg.connect(dsn, timeout=timeout_s)
    try:
        if create and not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", create):
            # CREATE DATABASE takes no bind parameters; the name is our constant.
            await conn.execute(f'CREATE DATABASE "{create}"')
    finally:
        await conn.close()


def probe(dsn: str, timeout_s: float = 5.0) -> bool:
    try:
        run_sync(_connect_and_create(dsn, None, timeout_s))
        return True
    except Exception:
        return False


def wait_ready(port: int, root: Path | None, timeout: float = 60.0) -> str:
    """Wait until asyncpg connects, create the `refunds` database; returns its DSN."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            run_sync(_connect_and_create(dsn_for(port, "postgres"), DATABASE, 5.0))
            return dsn_for(port)
        except Exception as exc:  # not accepting connections yet
            last = exc
            time.sleep(0.3)
    tail = log_tail(log_path(root)) if root else ""
    raise StackError(f"PostgreSQL on port {port} not ready after {timeout:.0f}s ({last!r})\n{tail}")


def stop(root: Path, pid: int | None, logs_dir: Path | None = None, remove: bool = False) -> None:
    """`pg_ctl stop -m fast`; if that fails, SIGINT (= fast shutdown) the recorded pid.

    With `remove`, keep a copy of the server log in logs_dir and delete the temp dir.
    """
    data = data_dir(root)
    # Only ours: pg_ctl would signal whatever pid a stale postmaster.pid names,
    # so check the cmdline first (the data dir path is unique to this run dir).
    live = [p for p in {pid, postmaster_pid(root)} if p and pid_matches(p, *markers(root))]
    if live:
        try:
            _run([str(find_bindir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"],
                 root, "pg_ctl stop")
        except StackError:
            pass  # fall through to signalling the pid ourselves
        for candidate in live:
            terminate(candidate, markers(root), sig=signal.SIGINT, timeout=30)
    if remove and root.exists():
        if logs_dir is not None and log_path(root).exists():
            logs_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log_path(root), logs_dir / "postgres.log")
        shutil.rmtree(root, ignore_errors=True)
