"""Pid, port and process helpers shared by the Kafka, PostgreSQL and service managers.

Rule of the house: we only ever signal pids we recorded ourselves, and only
after checking /proc/<pid>/cmdline still looks like what we started, because a
pid from an old state file may have been recycled by an unrelated process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar
from pathlib import Path

from rich.console import Console

# Progress goes to stderr so that stdout of `devstack up`/`env` stays clean
# enough to be eval'ed or parsed.
console = Console(stderr=True, highlight=False)

class _Detached(subprocess.Popen):
    """A Popen meant to outlive this interpreter (`devstack up` exits, the stack runs on).

    Plain Popen warns "subprocess N is still running" when garbage-collected;
    for these that is the intent, and we reap them ourselves (see _reap).
    """

    def __del__(self, *args: object, **kwargs: object) -> None:
        pass


# Popen handles of children started by *this* Python process. Keeping them lets
# us reap our own children (otherwise a killed child lingers as a zombie, looks
# alive in /proc, and Python warns about un-waited Popen objects).
_children: dict[int, _Detached] = {}


def free_ports(count: int = 1) -> list[int]:
    """Ports the kernel considers free on 127.0.0.1.

    All sockets stay open until every port is picked so the ports are distinct.
    There is an unavoidable race between closing and the real bind; fine locally.
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def port_from_env(var: str) -> int | None:
    value = os.environ.get(var)
    return int(value) if value else None


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our own child, so it stops being a zombie."""
    proc = _children.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            _children.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int | None) -> bool:
    """True if the process exists and is not a zombie."""
    if not pid:
        return False
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3 is the state; the command name in field 2 may contain spaces, so
    # split after its closing parenthesis.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def pid_matches(pid: int | None, *markers: str) -> bool:
    """Alive *and* its command line contains every marker (guards against pid reuse)."""
    if not pid_alive(pid):
        return False
    line = " ".join(cmdline(pid))
    return all(marker in line for marker in markers)


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start a detached process (own session) appending stdout+stderr to log_path.

    Own session: Ctrl-C in the terminal that ran `devstack up` must not reach
    the stack, and the process must outlive the CLI invocation.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = _Detached(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc.pid


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait until pid is gone (or a reaped zombie). Returns True if it exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def terminate(
    pid: int | None,
    markers: Sequence[str],
    *,
    sig: int = signal.SIGTERM,
    timeout: float = 30.0,
) -> bool:
    """Send `sig`, wait up to `timeout`, then SIGKILL. Only if pid still matches markers.

    Returns True if a process of ours was signalled.
    """
    if not pid or not pid_matches(pid, *markers):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
        os.kill(pid, signal.SIGCONT)  # a stopped (SIGSTOP) process handles `sig` only once continued
    if sig != signal.SIGKILL and wait_exit(pid, timeout):
        return True
    # Still there after the grace period (or SIGKILL was asked for directly).
    if pid_matches(pid, *markers):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_exit(pid, 10.0)
    return True


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:])


def log_errors(path: Path, limit: int = 8) -> str:
    """The first ERROR/FATAL lines: in a long JVM log the cause is rarely in the tail."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    hits = [line for line in lines if " ERROR " in line or " FATAL " in line][:limit]
    return ("first errors:\n" + "\n".join(hits) + "\n") if hits else ""


def wait_ready(what: str, probe: Callable[[], bool], pid: int | None, log: Path, timeout: float,
               every: float = 0.3) -> None:
    """Poll `probe` until it answers; fail early, with the log, if the process `pid` dies meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None and not pid_alive(pid):
            raise StackError(f"{what} exited during startup; {log_errors(log)}tail of {log}:\n{log_tail(log)}")
        if probe():
            return
        time.sleep(every)
    raise StackError(f"{what} not ready after {timeout:.0f}s; {log_errors(log)}tail of {log}:\n{log_tail(log)}")


def unused_port(port: int, taken: str) -> int:
    """`port`, refused with the message `taken` if something already listens there."""
    if port_open(port):
        raise StackError(taken)
    return port


def pinned_port(var: str) -> int | None:
    """A port the user pinned through `var`, refused if something already listens there."""
    port = port_from_env(var)
    return None if port is None else unused_port(port, f"{var}={port} is already in use on 127.0.0.1")


def own_port(what: str, port: int, timeout: float = 15.0) -> int:
    """The port `what` had before it went down, refused if another process took it meanwhile:
    a probe would then reach that process instead of ours.

    Waits a little first: a killed multi-threaded process (JVM, Go) can look gone
    while its last threads, and so its listening socket, are still being torn down.
    """
    deadline = time.monotonic() + timeout
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    return unused_port(port, f"{what}'s port {port} was taken by another process while {what} was down; "
                             "free it, or `down` (which deletes the data) to start afresh")


@contextlib.contextmanager
def file_lock(path: Path):
    """Exclusive flock on `path` (serialises concurrent `up`/`down`/jar downloads)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, but also usable when the caller already runs an event loop
    (e.g. an async pytest fixture): then the coroutine runs on a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict[str, Any] = {}

    def worker() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=worker, name="devstack-async")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


class StackError(RuntimeError):
    """A component failed to start or stop; the message says what to look at."""
