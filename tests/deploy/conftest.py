"""Render the kustomize overlays once per session with the pinned tools in .tools/bin."""

import importlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
SCHEMAS = Path(__file__).parent / "schemas"
# The services that call gateways (docs/gateway-simulator.md): each gets GATEWAY_ROUTES.
GATEWAY_CLIENTS = ("approval", "payout", "reconcile")
# Names the manifests set ahead of the services' code (their branches add the setting): the check
# that every name is a Settings field skips them, and `require_setting` xfails while one is unread.
AHEAD_OF_THE_SERVICES = {"GATEWAY_ROUTES"}


def tool(name: str) -> str:
    """A pinned tool from .tools/bin (Go tools), else from PATH (system packages such as promtool)."""
    path = ROOT / ".tools/bin" / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: run `make setup` (scripts/bootstrap.sh installs it)")
    return found


def settings_env_names(service: str) -> set[str]:
    """The environment variables a service reads: the fields of its Settings, upper-cased."""
    main = importlib.import_module(f"services.{service}.main")
    return {field.upper() for field in type(main.settings).model_fields}


def simulator_env_names() -> set[str]:
    """The environment variables the gateway simulator reads: SIM_<field>, or a field's aliases."""
    from gatewaysim.settings import SimSettings

    names = set()
    for field, info in SimSettings.model_fields.items():
        alias = info.validation_alias
        names |= set(alias.choices) if alias is not None else {f"SIM_{field.upper()}"}
    return names


def require_setting(service: str, name: str) -> None:
    """xfail (naming what is missing) while the service does not read a setting the manifests give it."""
    if name not in settings_env_names(service):
        pytest.xfail(f"services/{service} does not read {name} yet (its own branch adds it)")


def assert_routes_reach_the_simulator_accounts(routes_json: str, accounts_json: str, simulator_url: str) -> None:
    """GATEWAY_ROUTES name the simulator's accounts, at its URL, with the keys SIM_ACCOUNTS gives them."""
    from pydantic import TypeAdapter

    from gatewaysim.settings import Account
    from shared.runtime.gateway_routes import GatewayRoutes

    routes = TypeAdapter(GatewayRoutes).validate_json(routes_json)
    accounts = TypeAdapter(dict[str, Account]).validate_json(accounts_json)
    assert set(routes) == set(accounts) == {"sim", "stripe", "adyen"}
    for gateway, route in routes.items():
        account = accounts[gateway]
        assert route.simulator is True  # what ENVIRONMENT=production refuses
        assert route.base == f"{simulator_url}/{gateway}"
        assert route.kind == account.personality
        assert route.api_key.get_secret_value() == account.api_key
        # Stripe: the endpoint secret; Adyen: the hex HMAC key (the simulator's webhook_secret both ways).
        signing = route.webhook_secret if route.kind == "stripe" else route.hmac_key
        assert signing.get_secret_value() == account.webhook_secret
        if route.kind == "adyen":
            assert route.merchant_account == account.merchant_account
            assert (route.report_user, route.report_password.get_secret_value()) == (
                account.report_user, account.report_secret)


def kubeconform(*files: Path) -> subprocess.CompletedProcess:
    """Validate strictly against the vendored schemas only; a kind without a schema is an error."""
    return subprocess.run(
        [tool("kubeconform"), "-strict", "-summary", "-output", "text",
         "-schema-location", f"{SCHEMAS}/kubernetes/{{{{.ResourceKind}}}}{{{{.KindSuffix}}}}.json",
         "-schema-location", f"{SCHEMAS}/{{{{.Group}}}}/{{{{.ResourceKind}}}}_{{{{.ResourceAPIVersion}}}}.json",
         *map(str, files)],
        capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def rendered_files(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("rendered")
    files = {}
    for overlay in OVERLAYS:
        result = subprocess.run([tool("kustomize"), "build", str(K8S / "overlays" / overlay)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"kustomize build {overlay} failed:\n{result.stderr}"
        files[overlay] = out / f"{overlay}.yaml"
        files[overlay].write_text(result.stdout)
    return files


@pytest.fixture(scope="session")
def rendered(rendered_files) -> dict[str, list[dict]]:
    return {name: [d for d in yaml.safe_load_all(path.read_text()) if d] for name, path in rendered_files.items()}
