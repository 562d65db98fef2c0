"""The whole local stack: Kafka, PostgreSQL, topics, migrations, the five services and the console.

All state lives in <run>/stack.json so that any later invocation (another CLI
call, a test fixture) knows exactly which pids it may signal and which ports
to reuse. Components given from outside (KAFKA_BOOTSTRAP_SERVERS,
DATABASE_URL) are recorded as external and never stopped.

A component that died or was stopped comes back on its own data and port
(Kafka's from its server.properties, PostgreSQL's from its postgresql.conf);
only `down` deletes data.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from shared.contract import lifecycle

from . import kafka, postgres, prometheus, roles
from .processes import (
    StackError, console, file_lock, free_port, free_ports, own_port, pid_matches, pinned_port, port_from_env,
    run_sync, spawn, terminate, wait_ready, wait_exit,
)

# One service per stage of the lifecycle.
SERVICES = lifecycle.STAGES
# The gateway simulator: an external system the stack also runs locally (never in production).
GATEWAYSIM = "gatewaysim"
# The operations console (services/console): staff pages over the services' HTTP APIs; it owns no stage.
CONSOLE = "console"
# What `up` runs, in start order: the simulator first, so the services' gateway routes answer; the console last.
PROCESSES = (GATEWAYSIM, *SERVICES, CONSOLE)
# Gateway names the local stack routes to the simulator, each its own account there (docs/gateway-simulator.md).
SIM_ACCOUNTS = {"sim": "stripe", "stripe": "stripe", "adyen": "adyen"}
ADYEN_MERCHANT = "RefundPipelineLocal"
# A standing payment at the simulator for intake's scheduled drills to refund against.
DRILL_PAYMENT = {"account": "sim", "id": "pi_drill_standing", "amount": 10**12, "currency": "EUR"}
REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_READY_S = 90.0
SERVICE_READY_S = 60.0
# An alive service may be unready for a moment (e.g. reconnecting after a broker
# restart); `up` restarts it only if it stays unready this long.
UNREADY_GRACE_S = 30.0


class Stack:
    """Synchronous manager; see devstack/__init__.py for usage."""

    def __init__(self, run_dir: Path | str | None = None, repo_root: Path | None = None,
                 unready_grace_s: float = UNREADY_GRACE_S) -> None:
        self.repo_root = (repo_root or REPO_ROOT).resolve()
        default = os.environ.get("REFUND_RUN_DIR") or self.repo_root / ".run" / "dev"
        self.run_dir = Path(run_dir or default).resolve()
        self.logs_dir = self.run_dir / "logs"
        self.state_path = self.run_dir / "stack.json"
        self.kafka_dir = self.run_dir / "kafka"
        self.prometheus_dir = self.run_dir / "prometheus"
        self.unready_grace_s = unready_grace_s
        self._lock_depth = 0
        self._lock_cm: contextlib.AbstractContextManager | None = None
        self.state: dict[str, Any] = self._load()

    # ----------------------------------------------------------------- state
    def _load(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            state = {}
        state.setdefault("services", {})
        return state

    def _save(self) -> None:
        # Write-then-rename: a crash mid-write must not lose the pids we own.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.state_path)

    @contextlib.contextmanager
    def _locked(self):
        """Reentrant per-run-dir lock: two `up`/`down` on one run dir must not interleave."""
        if self._lock_depth == 0:
            self._lock_cm = file_lock(self.run_dir / ".lock")
            self._lock_cm.__enter__()
            self.state = self._load()  # another process may have changed it
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_cm is not None:
                self._lock_cm.__exit__(None, None, None)
                self._lock_cm = None

    # ------------------------------------------------------------ accessors
    @property
    def bootstrap(self) -> str:
        try:
            return self.state["kafka"]["bootstrap"]
        except KeyError:
            raise StackError("Kafka is not up (run up() first)") from None

    @property
    def dsn(self) -> str:
        try:
            return self.state["postgres"]["dsn"]
        except KeyError:
            raise StackError("PostgreSQL is not up (run up() first)") from None

    def env(self) -> dict[str, str]:
        """What a platform/operator needs: addresses, and (our own broker) the demo platform's and the
        read-only operator's Kafka credentials."""
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "DATABASE_URL": self.dsn,
                **kafka.client_env(self.kafka_credentials())}

    def kafka_credentials(self) -> dict[str, str]:
        """principal -> password of our broker (empty for an external one: its clients bring their own)."""
        if (self.state.get("kafka") or {}).get("external"):
            return {}
        return dict(self.state.get("kafka_credentials") or {})

    def kafka_auth(self, principal: str):
        """A KafkaAuth (shared/runtime/kafka_auth.py) as `principal` ("admin", "operator", "platform-shop-test",
        a service); PLAINTEXT for an external broker."""
        return kafka.auth_for(self.kafka_credentials(), principal)

    def kafka_env(self, service: str) -> dict[str, str]:
        """The KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* env a process of `service` ("payout", "payout@2")
        needs to connect as its own principal; {} for an external broker. Spawn code puts it after
        os.environ, so a platform's exported credentials never reach a service."""
        credentials = self.kafka_credentials()
        return kafka.auth_for(credentials, self.service_of(service)).env() if credentials else {}

    def service_url(self, name: str) -> str:
        record = self.state["services"].get(name)
        if not record or not record.get("port"):
            raise StackError(f"service {name} has no port yet (start it first)")
        return f"http://127.0.0.1:{record['port']}"

    # ------------------------------------------------------------ lifecycle
    def up(self, services: bool | Iterable[str] = True) -> None:
        """Bring back whatever is down, on its existing data and port; healthy components are left alone.

        `services`: all five (True), none (False) or the ones named.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._ensure_kafka()
            self._ensure_postgres()
            self._ensure_topics()
            self._apply_migrations()
            self._ensure_services(PROCESSES if services is True else tuple(services or ()))

    def restart(self, component: str) -> None:
        """Stop one component and start it again on its data and port: "kafka", "postgres" or a service.

        The services stay up through a Kafka or PostgreSQL restart and reconnect.
        """
        with self._locked():
            if component not in ("kafka", "postgres"):
                self.restart_service(component)
                return
            if (self.state.get(component) or {}).get("external"):
                raise StackError(f"{component} is an existing one from the environment; devstack does not manage it")
            stop, ensure = {"kafka": (self._stop_kafka, self._ensure_kafka),
                            "postgres": (self._stop_postgres, self._ensure_postgres)}[component]
            stop()
            ensure()

    def down(self) -> None:
        """Stop everything we started (services, Kafka, PostgreSQL, Prometheus) and remove their data."""
        with self._locked():
            self.stop_prometheus()
            shutil.rmtree(self.prometheus_dir / "data", ignore_errors=True)
            for name in list(self.state["services"]):
                self.stop_service(name)
            self._stop_kafka(remove=True)
            self._stop_postgres(remove=True)
            self.state = {"services": {}}
            self.state_path.unlink(missing_ok=True)
            console.print(f"[bold]down[/]: stopped; logs kept in {self.logs_dir}")

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _stopped(self, component: str, remove: bool) -> None:
        """Record a stop: `down` forgets the component, any other stop keeps its port for the next start."""
        record = self.state.get(component) or {}
        if remove or record.get("external"):
            self.state.pop(component, None)
        elif record:
            record["pid"] = None
        self._save()

    # ------------------------------------------------------------ prometheus
    def _prometheus_alive(self) -> bool:
        record = self.state.get("prometheus") or {}
        return bool(record.get("pid")) and pid_matches(record["pid"], *prometheus.markers(record["port"]))

    def start_prometheus(self, *, rule_files: list[Path] | None = None, scrape_interval: str = "15s",
                         evaluation_interval: str = "15s") -> str:
        """Make our Prometheus run with this config, scraping every service; returns its URL.

        Left alone if it already runs with this config, else (re)started on its
        port and its data. Rules default to deploy/prometheus/rules.yml; tests pass a fast variant.
        """
        with self._locked():
            rules = rule_files if rule_files is not None else [self.repo_root / "deploy/prometheus/rules.yml"]
            targets = {name: rec["port"] for name, rec in self.state["services"].items() if rec.get("port")}
            config = self.prometheus_dir / "prometheus.yml"
            changed = prometheus.write_config(config, targets, rule_files=rules, scrape_interval=scrape_interval,
                                              evaluation_interval=evaluation_interval)
            if not changed and self._prometheus_alive():
                url = f"http://127.0.0.1:{self.state['prometheus']['port']}"
                console.print(f"[bold]prometheus[/]: already running (pid {self.state['prometheus']['pid']}) at {url}")
                return url
            self.stop_prometheus()
            known = (self.state.get("prometheus") or {}).get("port")
            port = own_port("prometheus", known) if known else port_from_env("PROMETHEUS_PORT") or free_port()
            log = self.logs_dir / "prometheus.log"
            pid = prometheus.start(self.prometheus_dir / "data", config, port, log)
            self.state["prometheus"] = {"pid": pid, "port": port}
            self._save()
            try:
                prometheus.wait_ready(port, pid, log)
            except StackError:
                self.stop_prometheus()
                raise
            url = f"http://127.0.0.1:{port}"
            console.print(f"[bold]prometheus[/]: ready at {url} (pid {pid})")
            return url

    def stop_prometheus(self) -> None:
        record = self.state.get("prometheus") or {}
        if record.get("pid"):
            prometheus.stop(record["pid"], record["port"])
            console.print(f"[bold]prometheus[/]: stopped pid {record['pid']}")
        self._stopped("prometheus", remove=False)

    # ----------------------------------------------------------------- kafka
    def _kafka_alive(self) -> bool:
        record = self.state.get("kafka") or {}
        return not record.get("external") and pid_matches(record.get("pid"), *kafka.markers(self.kafka_dir))

    def _ensure_kafka(self) -> None:
        record = self.state.get("kafka") or {}
        external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        # `eval $(devstack env)` exports our own broker's address: still ours, even while it is down.
        if external and (record.get("external") or external != record.get("bootstrap")):
            self._stop_kafka()
            console.print(f"[bold]kafka[/]: using existing cluster at {external}")
            kafka.wait_ready(external, None, self.logs_dir / "kafka.log", timeout=30)
            self.state["kafka"] = {"external": True, "bootstrap": external}
            self._save()
            return
        if self._kafka_alive():
            if kafka.probe(record["bootstrap"], timeout_s=10, auth=self.kafka_auth("admin")):
                console.print(f"[bold]kafka[/]: already running (pid {record['pid']}) at {record['bootstrap']}")
                return
            console.print("[yellow]kafka[/]: process alive but not answering; restarting it")
            self._stop_kafka()

        libs = kafka.ensure_jars(self.repo_root / "deploy/local/kafka/pom.xml")
        if saved := kafka.saved_ports(self.kafka_dir):
            if not (kafka.authenticated(self.kafka_dir) and self.state.get("kafka_credentials")):
                raise StackError(f"{self.kafka_dir} holds a broker made before Kafka authentication (or its "
                                 "credentials are gone with stack.json); run `python -m devstack down` once "
                                 "(this deletes the local Kafka and PostgreSQL data), then `up`")
            port, controller_port = (own_port("kafka", p) for p in saved)
            how = "restarting on its data in " + str(self.kafka_dir)
        else:
            # Generated once per run dir, kept with the other local state; `down` forgets them.
            self.state["kafka_credentials"] = kafka.new_credentials()
            port, controller_port = free_ports(2)
            port = pinned_port("KAFKA_PORT") or port
            if controller_port == port:
                controller_port = free_port()
            how = "starting a new KRaft node"
        log = self.logs_dir / "kafka.log"
        started = time.monotonic()
        console.print(f"[bold]kafka[/]: {how} on 127.0.0.1:{port} (controller {controller_port})…")
        pid = kafka.start(self.kafka_dir, libs, self.repo_root / "deploy/local/kafka/log4j2.properties",
                          log, port, controller_port, self.state["kafka_credentials"])
        bootstrap = f"127.0.0.1:{port}"
        # Record before waiting, so a failed start can still be cleaned up by `down`.
        self.state["kafka"] = {"external": False, "pid": pid, "port": port,
                               "controller_port": controller_port, "bootstrap": bootstrap,
                               "dir": str(self.kafka_dir)}
        self._save()
        try:
            kafka.wait_ready(bootstrap, pid, log, timeout=KAFKA_READY_S, auth=self.kafka_auth("admin"))
        except StackError:
            self._stop_kafka()
            raise
        console.print(f"[bold]kafka[/]: ready in {time.monotonic() - started:.1f}s (pid {pid})")

    def _stop_kafka(self, remove: bool = False) -> None:
        record = self.state.get("kafka") or {}
        if not record.get("external") and kafka.stop(record.get("pid"), self.kafka_dir, timeout=30):
            console.print(f"[bold]kafka[/]: stopped pid {record['pid']}")
        if remove:
            shutil.rmtree(self.kafka_dir, ignore_errors=True)
        self._stopped("kafka", remove)

    # -------------------------------------------------------------- postgres
    def _pg_pid(self) -> int | None:
        """Our postmaster's pid now: PostgreSQL may have been restarted under a new one."""
        if (self.state.get("postgres") or {}).get("external"):
            return None
        return postgres.running_pid(postgres.pg_root(self.run_dir))

    def _ensure_postgres(self) -> None:
        record = self.state.get("postgres") or {}
        external = os.environ.get("DATABASE_URL")
        if external and (record.get("external") or external != record.get("dsn")):
            self._stop_postgres()
            console.print("[bold]postgres[/]: using existing database from DATABASE_URL")
            if not postgres.probe(external, timeout_s=15):
                raise StackError("DATABASE_URL is set but no connection could be made with it")
            self.state["postgres"] = {"external": True, "dsn": external}
            self._save()
            return
        root = postgres.pg_root(self.run_dir)
        existing = postgres.initialised(root)
        if existing:
            # Older devstacks kept the port on pg_ctl's command line, so only in stack.json.
            port = postgres.configured_port(root) or record.get("port")
            if not port:
                raise StackError(f"{root} holds a cluster on an unknown port; `down` removes it")
        else:
            port = pinned_port("PGPORT_LOCAL") or free_port()
        dsn = postgres.dsn_for(port)
        if pid := self._pg_pid():
            if postgres.probe(dsn):
                console.print(f"[bold]postgres[/]: already running (pid {pid}) on port {port}")
                self.state["postgres"] = {"external": False, "pid": pid, "port": port, "root": str(root), "dsn": dsn}
                self._save()
                return
            console.print("[yellow]postgres[/]: process alive but not answering; restarting it")
            self._stop_postgres()

        started = time.monotonic()
        console.print(f"[bold]postgres[/]: {'start on its data in ' + str(root) if existing else 'initdb + start'}"
                      f" on 127.0.0.1:{port}…")
        # Recorded up front (pid unknown yet) so `down` cleans up a half-made cluster.
        self.state["postgres"] = {"external": False, "pid": None, "port": port, "root": str(root)}
        self._save()
        try:
            pid = postgres.start(root, own_port("postgres", port) if existing else port)
            self.state["postgres"]["pid"] = pid
            self._save()
            postgres.wait_ready(port, root)
        except StackError:
            self._stop_postgres()
            raise
        self.state["postgres"]["dsn"] = dsn
        self._save()
        console.print(f"[bold]postgres[/]: ready in {time.monotonic() - started:.1f}s (pid {pid})")

    def _stop_postgres(self, remove: bool = False) -> None:
        record = self.state.get("postgres") or {}
        root = postgres.pg_root(self.run_dir)
        # `down` also removes a cluster it has no record of (e.g. stack.json was deleted).
        if root.exists() and (remove or not record.get("external")):
            postgres.stop(root, record.get("pid"), logs_dir=self.logs_dir, remove=remove)
            console.print(f"[bold]postgres[/]: stopped{' and removed ' + str(root) if remove else ''}")
        self._stopped("postgres", remove)

    # ------------------------------------------------------ topics/migrations
    def _ensure_topics(self) -> None:
        from shared.contract.topics import TOPICS

        admin = self.kafka_auth("admin")
        created = kafka.create_topics(self.bootstrap, TOPICS, admin)
        console.print(f"[bold]topics[/]: {len(created)} created, {len(TOPICS) - len(created)} already there")
        if credentials := self.kafka_credentials():
            # Principals added to the ACL table since this dir was formatted become users now.
            if missing := kafka.missing_users(credentials):
                credentials.update(missing)
                kafka.add_scram_users(kafka.ensure_jars(self.repo_root / "deploy/local/kafka/pom.xml"),
                                      self.bootstrap, credentials["admin"], missing, self.kafka_dir)
                self.state["kafka_credentials"] = credentials
                self._save()
            rules = kafka.ensure_acls(self.bootstrap, admin)
            console.print(f"[bold]acls[/]: {rules} rules for {len(credentials) - 1} principals")

    def _apply_migrations(self) -> None:
        """One role per schema (devstack/roles.py), then each service's migrations run as its role, so it
        owns its tables and has no grant on any other schema. (Services also migrate at start; doing it
        here lets tests use the database first.) The simulator migrates its own schema when it starts."""
        from shared.runtime.db import apply_migrations

        run_sync(roles.ensure_roles(self.dsn, self._secrets()["db"]))
        for name in SERVICES:
            folder = self.repo_root / "services" / name / "migrations"
            ran = run_sync(apply_migrations(self.dsn_of(name), name, folder))
            console.print(f"[bold]migrations[/]: {name}: {len(ran)} applied")

    def _secrets(self) -> dict[str, Any]:
        """Passwords and gateway credentials of this run dir: made once, kept in stack.json (local only)."""
        if "secrets" not in self.state:
            self.state["secrets"] = {
                "db": {schema: secrets.token_hex(16) for schema in (*SERVICES, roles.SIMULATOR_SCHEMA)},
                "gateways": {account: {"api_key": f"sk_local_{secrets.token_hex(12)}",
                                       "webhook_secret": f"whsec_{secrets.token_hex(16)}",
                                       "hmac_key": secrets.token_hex(32).upper()} for account in SIM_ACCOUNTS},
            }
            self._save()
        return self.state["secrets"]

    def dsn_of(self, process: str) -> str:
        """The DSN a service (or the simulator) connects with: its own role, its own schema only."""
        schema = roles.SIMULATOR_SCHEMA if process == GATEWAYSIM else self.service_of(process)
        return roles.dsn_as(self.dsn, roles.role_of(schema), self._secrets()["db"][schema])

    def gateway_routes(self) -> dict[str, dict]:
        """GATEWAY_ROUTES for the services: every local gateway name to its account at the simulator."""
        base, keys = self.service_url(GATEWAYSIM), self._secrets()["gateways"]
        routes = {}
        for account, personality in SIM_ACCOUNTS.items():
            route = {"kind": personality, "base_url": f"{base}/{account}", "api_key": keys[account]["api_key"],
                     "simulator": True}
            if personality == "stripe":
                route["webhook_secret"] = keys[account]["webhook_secret"]
            else:
                route |= {"hmac_key": keys[account]["hmac_key"], "merchant_account": ADYEN_MERCHANT,
                          "report_user": f"report@{ADYEN_MERCHANT}", "report_password": keys[account]["api_key"]}
            routes[account] = route
        return routes

    def simulator_accounts(self) -> dict[str, dict]:
        """SIM_ACCOUNTS: the same accounts and credentials, each posting its webhooks to payout."""
        payout, keys = self.service_url("payout"), self._secrets()["gateways"]
        accounts = {}
        for account, personality in SIM_ACCOUNTS.items():
            accounts[account] = {"personality": personality, "api_key": keys[account]["api_key"],
                                 "webhook_url": f"{payout}/v1/gateway-events/{account}"}
            if personality == "stripe":
                accounts[account]["webhook_secret"] = keys[account]["webhook_secret"]
            else:  # the simulator signs Adyen-shaped notifications with the hex HMAC key as webhook_secret
                accounts[account] |= {"webhook_secret": keys[account]["hmac_key"], "merchant_account": ADYEN_MERCHANT,
                                      "report_user": f"report@{ADYEN_MERCHANT}",
                                      "report_password": keys[account]["api_key"]}
        return accounts

    # -------------------------------------------------------------- services
    @staticmethod
    def service_of(name: str) -> str:
        """The service an instance runs: "payout@2" (a second instance) runs payout."""
        return name.partition("@")[0]

    def _app_of(self, name: str) -> str:
        service = self.service_of(name)
        return "gatewaysim.main:app" if service == GATEWAYSIM else f"services.{service}.main:app"

    def _service_markers(self, name: str, port: int) -> tuple[str, str]:
        return (self._app_of(name), f"--port {port}")

    def _port_of(self, name: str) -> int:
        """The process's port, chosen once (before anything starts: the simulator and the services
        name each other's addresses) and kept across restarts: tests hold URLs from service_url()."""
        record = self.state["services"].setdefault(name, {})
        if not record.get("port"):
            record["port"] = port_from_env(f"{name.upper()}_PORT") or free_port()
            self._save()
        return record["port"]

    def _process_env(self, name: str) -> dict[str, str]:
        if self.service_of(name) == GATEWAYSIM:
            # SIM_ACCOUNTS / GATEWAY_ROUTES given in the environment replace the local ones (tests add accounts).
            return {"DATABASE_URL": self.dsn_of(name),
                    "SIM_ACCOUNTS": os.environ.get("SIM_ACCOUNTS") or json.dumps(self.simulator_accounts()),
                    "SIM_SEED_PAYMENTS": json.dumps([DRILL_PAYMENT])}
        if self.service_of(name) == CONSOLE:
            # No broker, no database: the services' addresses, and local sign-in (tokens the services verify).
            return {"ENVIRONMENT": "local",
                    **{f"{service.upper()}_URL": self.service_url(service) for service in SERVICES}}
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "DATABASE_URL": self.dsn_of(name),
                "ENVIRONMENT": "local",
                "GATEWAY_ROUTES": os.environ.get("GATEWAY_ROUTES") or json.dumps(self.gateway_routes()),
                # The simulator closes report data every few seconds; a laptop need not wait a minute.
                "RECONCILE_REPORT_PULL_SECONDS": "1"}

    def service_alive(self, name: str) -> bool:
        record = self.state["services"].get(name) or {}
        return bool(record.get("port")) and pid_matches(
            record.get("pid"), *self._service_markers(name, record["port"])
        )

    def _readiness(self, name: str) -> dict | None:
        """The /readyz answer of *our* process (None if it gives none): a free port can be
        taken by someone else's service before ours binds it, and that one's answer must not count."""
        try:
            answer = httpx.get(f"{self.service_url(name)}/readyz", timeout=2.0).json()
            return answer if answer.get("pid") == self.state["services"][name]["pid"] else None
        except (httpx.HTTPError, ValueError, AttributeError, KeyError, StackError):
            return None

    def _service_ready(self, name: str) -> bool:
        return (self._readiness(name) or {}).get("status") == "ready"

    def _ensure_services(self, names: Iterable[str]) -> None:
        dead, unready = [], []
        for name in names:
            record = self.state["services"].get(name) or {}
            # A service wired to a Kafka/PostgreSQL that has since been replaced is stale.
            current = record.get("bootstrap") == self.bootstrap and record.get("dsn") == self.dsn
            if not (self.service_alive(name) and current):
                self.stop_service(name)
                dead.append(name)
            elif self._service_ready(name):
                console.print(f"[bold]{name}[/]: already running (pid {record['pid']}) at {self.service_url(name)}")
            else:
                unready.append(name)
        self._start_all(dead)
        self._start_all(self._still_unready(unready))

    def _still_unready(self, names: list[str]) -> list[str]:
        """Of these alive but unready services, the ones not ready within the grace period (now stopped)."""
        deadline = time.monotonic() + self.unready_grace_s
        stuck = []
        for name in names:
            console.print(f"[yellow]{name}[/]: alive but not ready; waiting up to {self.unready_grace_s:.0f}s")
            try:
                wait_ready(f"service {name}", lambda: self._service_ready(name), self.state["services"][name]["pid"],
                           self.logs_dir / f"{name}.log", max(deadline - time.monotonic(), 1.0), every=1.0)
                console.print(f"[bold]{name}[/]: ready at {self.service_url(name)}")
            except StackError:
                console.print(f"[yellow]{name}[/]: still not ready; restarting it")
                self.stop_service(name)
                stuck.append(name)
        return stuck

    def _spawn_service(self, name: str, env: Mapping[str, str] | None = None) -> int:
        service = self.service_of(name)
        if service not in PROCESSES:
            raise StackError(f"unknown service {name!r}; known: {', '.join(PROCESSES)} (or <service>@<n>)")
        for other in PROCESSES:
            self._port_of(other)
        port = self._port_of(name)
        record = self.state["services"][name]
        # `env` goes to this process only: os.environ is shared by the whole caller (e.g. a test session).
        process_env = {
            **os.environ,
            **self._process_env(name),
            **(env or {}),
            "SERVICE_NAME": service,  # every instance of a service joins its one consumer group
            "HTTP_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
            # its own Kafka principal (the simulator talks to no broker)
            **(self.kafka_env(service) if service in SERVICES else {}),
        }
        argv = [sys.executable, "-m", "uvicorn", self._app_of(name), "--host", "127.0.0.1",
                "--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "20"]
        pid = spawn(argv, self.logs_dir / f"{name}.log", cwd=self.repo_root, env=process_env)
        record.update(pid=pid, port=port, bootstrap=self.bootstrap, dsn=self.dsn, started_at=time.time())
        self._save()
        console.print(f"[bold]{name}[/]: starting pid {pid} on port {port}")
        return pid

    def _start_all(self, names: list[str], env: Mapping[str, str] | None = None) -> None:
        # Spawn all first, then wait: the interpreters start in parallel.
        for name in names:
            self._spawn_service(name, env)
        for name in names:
            try:
                wait_ready(f"service {name}", lambda: self._service_ready(name), self.state["services"][name]["pid"],
                           self.logs_dir / f"{name}.log", SERVICE_READY_S)
            except StackError:
                self.stop_service(name)
                raise
            console.print(f"[bold]{name}[/]: ready at {self.service_url(name)}")

    def start_service(self, name: str, env: Mapping[str, str] | None = None) -> None:
        """Start one service (on its remembered port) and wait for /readyz; no-op if running.

        `env` is added to os.environ for this process only; a later start without it runs without it.
        """
        with self._locked():
            if not self.service_alive(name):
                self._start_all([name], env)

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Signal the service (default SIGTERM), wait up to `timeout`, then SIGKILL."""
        with self._locked():
            record = self.state["services"].get(name) or {}
            if record.get("pid") and record.get("port"):
                terminate(record["pid"], self._service_markers(name, record["port"]), sig=sig, timeout=timeout)
            if record:
                record["pid"] = None  # the port stays: a restart reuses it
                self._save()

    def kill_service(self, name: str) -> None:
        """SIGKILL (a crash, no graceful shutdown) and wait for the process to be gone."""
        record = self.state["services"].get(name) or {}
        pid = record.get("pid")
        self.stop_service(name, sig=signal.SIGKILL, timeout=0)
        if pid:
            wait_exit(pid, 10.0)

    def start_instances(self, *names: str, instance: int = 2) -> list[str]:
        """Start another instance of each service (e.g. "payout@2") on its own port; wait for all.

        The instances join their service's consumer group, so Kafka splits the
        partitions between them. Stop one with stop_service("payout@2").
        """
        started = [f"{name}@{instance}" for name in names]
        with self._locked():
            self._start_all([name for name in started if not self.service_alive(name)])
        return started

    def restart_service(self, name: str, env: Mapping[str, str] | None = None) -> None:
        """Stop the service and start it again, with `env` on top of os.environ (see start_service)."""
        self.stop_service(name)
        self.start_service(name, env)

    # ---------------------------------------------------------------- status
    def status(self) -> list[dict[str, Any]]:
        """One row per component: component, pid, alive (the process), ready (it answers; a service's own
        /readyz), unready (the checks /readyz fails), address, external (alive = answers)."""
        self.state = self._load()
        rows = []

        def row(component: str, record: dict, pid: int | None, alive: bool, answers: Callable[[], bool],
                address: str, unready: tuple[str, ...] = ()) -> None:
            external = bool(record.get("external"))
            ready = (external or alive) and answers()
            rows.append({"component": component, "pid": pid, "alive": ready if external else alive, "ready": ready,
                         "unready": list(unready), "address": address, "external": external})

        if k := self.state.get("kafka"):
            row("kafka", k, k.get("pid"), self._kafka_alive(),
                lambda: kafka.probe(k["bootstrap"], timeout_s=3, auth=self.kafka_auth("admin")),
                k["bootstrap"])
        if p := self.state.get("postgres"):
            pid = self._pg_pid()
            row("postgres", p, pid or p.get("pid"), bool(pid), lambda: postgres.probe(p.get("dsn", ""), timeout_s=3),
                p.get("dsn", ""))
        if prom := self.state.get("prometheus"):
            row("prometheus", prom, prom.get("pid"), self._prometheus_alive(), lambda: prometheus.ready(prom["port"]),
                f"http://127.0.0.1:{prom['port']}")
        for name in sorted(self.state["services"], key=lambda n: (PROCESSES.index(self.service_of(n)), n)):
            if record := self.state["services"].get(name):
                alive = self.service_alive(name)
                readiness = (self._readiness(name) if alive else None) or {}
                failing = tuple(check for check, ok in (readiness.get("checks") or {}).items() if not ok)
                row(name, record, record.get("pid"), alive, lambda: readiness.get("status") == "ready",
                    f"http://127.0.0.1:{record['port']}", failing)
        return rows
