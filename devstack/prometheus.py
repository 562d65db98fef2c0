"""A local Prometheus (Debian's `prometheus` binary) scraping the devstack's services.

Started by us with our own config and data dir under the run dir; the Debian
package's own service is never used. `fast_rules` derives a test variant of
deploy/prometheus/rules.yml (short `for:` durations) from the real file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import yaml

from . import processes
from .processes import StackError, spawn, terminate

READY_S = 60.0


def binary() -> str | None:
    return shutil.which("prometheus")


def markers(port: int) -> tuple[str, str]:
    return ("prometheus", f"--web.listen-address=127.0.0.1:{port}")


def write_config(path: Path, targets: dict[str, int], *, rule_files: list[Path],
                 scrape_interval: str, evaluation_interval: str) -> bool:
    """One job per service, named refund-<service> like the k8s Service and compose jobs.

    Returns whether the file changed (a running Prometheus with the same config can stay)."""
    jobs: dict[str, list[str]] = {}
    for name, port in targets.items():
        jobs.setdefault(f"refund-{name.partition('@')[0]}", []).append(f"127.0.0.1:{port}")
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": hosts}]}
                           for job, hosts in sorted(jobs.items())],
    }
    text = yaml.safe_dump(config, sort_keys=False)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def fast_rules(source: Path, target: Path, for_: str) -> Path:
    """The real rules with every alert's `for:` replaced by `for_` (for tests and local drills)."""
    rules = yaml.safe_load(source.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule and "for" in rule:
                rule["for"] = for_
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(rules, sort_keys=False))
    return target


def start(data_dir: Path, config: Path, port: int, log: Path) -> int:
    exe = binary()
    if exe is None:
        raise StackError("prometheus is not installed (make setup installs Debian's prometheus package)")
    # Kept across restarts: only `down` deletes it.
    data_dir.mkdir(parents=True, exist_ok=True)
    return spawn([exe, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
                  f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d",
                  "--web.enable-lifecycle"], log)


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(port: int, pid: int, log: Path, timeout: float = READY_S) -> None:
    processes.wait_ready("prometheus", lambda: ready(port), pid, log, timeout)


def stop(pid: int | None, port: int, timeout: float = 20.0) -> bool:
    return terminate(pid, markers(port), timeout=timeout)
