"""The local overlay's simulator Secrets, as deploy/k8s/components/gateway-simulator/local-secrets.sh prints them."""

import subprocess

import yaml
from pydantic import TypeAdapter

from gatewaysim.settings import Account
from tests.deploy.conftest import GATEWAY_CLIENTS, ROOT, assert_routes_reach_the_simulator_accounts

SCRIPT = ROOT / "deploy/k8s/components/gateway-simulator/local-secrets.sh"


def printed() -> dict[str, dict[str, str]]:
    out = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, check=True, timeout=30).stdout
    return {d["metadata"]["name"]: d["stringData"] for d in yaml.safe_load_all(out) if d["kind"] == "Secret"}


def referenced(docs: list[dict]) -> set[tuple[str, str]]:
    """(Secret, key) pairs the local overlay's simulator and gateway clients read."""
    readers = {"gatewaysim", *(f"refund-{name}" for name in GATEWAY_CLIENTS)}
    refs = set()
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"] in readers:
            for var in d["spec"]["template"]["spec"]["containers"][0].get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref and var["name"] in ("SIM_ACCOUNTS", "GATEWAY_ROUTES"):
                    refs.add((ref["name"], ref["key"]))
    return refs


def test_the_script_prints_the_secrets_the_local_overlay_reads(rendered):
    secrets = printed()
    assert {(name, key) for name, data in secrets.items() for key in data} == referenced(rendered["local"])


def test_routes_and_accounts_carry_the_same_fresh_keys(rendered):
    first, second = printed(), printed()
    services = {d["metadata"]["name"]: d for d in rendered["local"] if d["kind"] == "Service"}
    sim_port = services["gatewaysim"]["spec"]["ports"][0]["port"]
    assert sim_port == 80  # so http://gatewaysim is the simulator's URL in the namespace
    assert_routes_reach_the_simulator_accounts(first["gatewaysim-routes"]["gateway-routes"],
                                               first["gatewaysim-accounts"]["sim-accounts"], "http://gatewaysim")
    assert first["gatewaysim-routes"] != second["gatewaysim-routes"]  # generated per run, never committed


def test_the_simulators_webhooks_go_to_payouts_service(rendered):
    accounts = TypeAdapter(dict[str, Account]).validate_json(printed()["gatewaysim-accounts"]["sim-accounts"])
    payout = {d["metadata"]["name"]: d for d in rendered["local"] if d["kind"] == "Service"}["refund-payout"]
    assert payout["spec"]["ports"][0]["port"] == 80
    for name, account in accounts.items():
        assert account.webhook_url == f"http://refund-payout/v1/gateway-events/{name}"
