"""Who can reach whom under the rendered NetworkPolicies, read the way Kubernetes reads them.

A connection is allowed when the source's egress and the destination's ingress both allow it; a pod
no policy selects for a direction is open in that direction. Pods are matched by their namespace and
labels only (ipBlock rules are for addresses outside the cluster), ports by number or by the
destination pod's named container port.
"""

from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network

import pytest

from devstack import SERVICES
from tests.deploy.conftest import GATEWAY_CLIENTS

NAMESPACE = {"local": "refunds-dev", "prod": "refunds"}


@dataclass(frozen=True)
class Peer:
    """A pod (namespace, labels, named ports) or, with namespace None, an address outside the cluster."""

    namespace: str | None
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    ip: str | None = None


DATABASE = Peer(None, ip="10.20.30.40")  # inside 10.0.0.0/8, where the policies expect PostgreSQL
GATEWAY_API = Peer(None, ip="203.0.113.7")  # a gateway on the internet
INGRESS_CONTROLLER = Peer("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
PROMETHEUS = Peer("monitoring", {"app.kubernetes.io/name": "prometheus"})


def selects(selector: dict, labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    tests = {"In": lambda key, values: labels.get(key) in values,
             "NotIn": lambda key, values: labels.get(key) not in values,
             "Exists": lambda key, _: key in labels, "DoesNotExist": lambda key, _: key not in labels}
    return all(tests[e["operator"]](e["key"], e.get("values", [])) for e in selector.get("matchExpressions", []))


def peer_matches(rule_peer: dict, peer: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in rule_peer:
        if peer.namespace is not None:
            return False
        block = rule_peer["ipBlock"]
        address = ip_address(peer.ip)
        return address in ip_network(block["cidr"]) and not any(
            address in ip_network(cidr) for cidr in block.get("except", []))
    if peer.namespace is None:
        return False
    if "namespaceSelector" in rule_peer:
        in_namespace = selects(rule_peer["namespaceSelector"], {"kubernetes.io/metadata.name": peer.namespace})
    else:
        in_namespace = peer.namespace == policy_namespace
    return in_namespace and selects(rule_peer.get("podSelector", {}), peer.labels)


def port_matches(rule: dict, port: int, destination: Peer) -> bool:
    if "ports" not in rule:
        return True
    return any(p.get("protocol", "TCP") == "TCP" and (p["port"] == port or destination.ports.get(p["port"]) == port)
               for p in rule["ports"])


def admits(policies: list[dict], subject: Peer, direction: str, other: Peer, port: int, destination: Peer) -> bool:
    """Whether the policies selecting `subject` for `direction` let it talk with `other` on the port."""
    peers_key = {"Ingress": "from", "Egress": "to"}[direction]
    selecting = [p for p in policies if p["metadata"]["namespace"] == subject.namespace
                 and direction in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], subject.labels)]
    if not selecting:
        return True
    return any(port_matches(rule, port, destination)
               and (peers_key not in rule or any(peer_matches(x, other, p["metadata"]["namespace"])
                                                 for x in rule[peers_key]))
               for p in selecting for rule in p["spec"].get(direction.lower(), []))


def reachable(policies: list[dict], source: Peer, destination: Peer, port: int) -> bool:
    egress = source.namespace is None or admits(policies, source, "Egress", destination, port, destination)
    ingress = destination.namespace is None or admits(policies, destination, "Ingress", source, port, destination)
    return egress and ingress


def pods(docs: list[dict]) -> dict[str, Peer]:
    """Each Deployment's pod as a peer: `payout`, ..., `gatewaysim`."""
    found = {}
    for d in docs:
        if d["kind"] == "Deployment":
            template = d["spec"]["template"]
            ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
            found[d["metadata"]["name"].removeprefix("refund-")] = Peer(
                d["metadata"]["namespace"], template["metadata"]["labels"], ports)
    return found


@pytest.fixture(scope="module", params=["local", "prod"])
def overlay(request, rendered):
    docs = rendered[request.param]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert {p["metadata"]["namespace"] for p in policies} == {NAMESPACE[request.param]}
    return request.param, policies, pods(docs)


def test_the_policies_deny_what_they_do_not_allow(overlay):
    _, policies, pod = overlay
    assert not reachable(policies, pod["intake"], pod["payout"], 8080)
    assert not reachable(policies, pod["payout"], GATEWAY_API, 80)
    assert not reachable(policies, INGRESS_CONTROLLER, pod["payout"], 9090)


def test_gateway_webhooks_reach_payout_through_the_ingress_controller(overlay):
    _, policies, pod = overlay
    assert reachable(policies, INGRESS_CONTROLLER, pod["payout"], 8080)


@pytest.mark.parametrize("name", SERVICES)
def test_only_the_gateway_clients_and_notify_reach_https_outside_the_cluster(overlay, name):
    _, policies, pod = overlay
    assert reachable(policies, pod[name], GATEWAY_API, 443) == (name in (*GATEWAY_CLIENTS, "notify"))
    assert reachable(policies, pod[name], DATABASE, 5432)


def test_the_simulator_exists_only_in_the_local_overlay(overlay):
    name, _, pod = overlay
    assert ("gatewaysim" in pod) == (name == "local")


@pytest.mark.parametrize("name", SERVICES)
def test_only_the_gateway_clients_reach_the_simulator(rendered, name):
    policies = [d for d in rendered["local"] if d["kind"] == "NetworkPolicy"]
    pod = pods(rendered["local"])
    assert reachable(policies, pod[name], pod["gatewaysim"], 8080) == (name in GATEWAY_CLIENTS)
    # The simulator's own policy says so too, not only the callers' egress.
    sim = pod["gatewaysim"]
    assert admits(policies, sim, "Ingress", pod[name], 8080, sim) == (name in GATEWAY_CLIENTS)
    assert not reachable(policies, INGRESS_CONTROLLER, pod["gatewaysim"], 8080)
    assert not reachable(policies, PROMETHEUS, pod["gatewaysim"], 8080)


@pytest.mark.parametrize("name", SERVICES)
def test_the_simulator_reaches_payout_for_webhooks_and_its_database_only(rendered, name):
    policies = [d for d in rendered["local"] if d["kind"] == "NetworkPolicy"]
    pod = pods(rendered["local"])
    assert reachable(policies, pod["gatewaysim"], pod[name], 8080) == (name == "payout")
    assert reachable(policies, pod["gatewaysim"], DATABASE, 5432)
    assert not reachable(policies, pod["gatewaysim"], GATEWAY_API, 443)
