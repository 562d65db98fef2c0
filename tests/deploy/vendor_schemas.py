"""Regenerate the JSON schemas under tests/deploy/schemas/ (run by hand, not by the tests).

kubeconform cannot download schemas here (only package registries are
reachable), so the schemas of the kinds deploy/k8s uses are vendored:

- Kubernetes: from the `kubernetes-validate` wheel on PyPI, which ships the
  OpenAPI-derived JSON schemas per Kubernetes version. Each kind's schema is
  made self-contained (its `$defs` pruned to what it references).
- CRDs (Strimzi, KEDA, prometheus-operator): converted the way kubeconform's
  openapi2jsonschema does it: one schema per served version, taken from the
  CRD's `openAPIV3Schema`, strict (no unknown fields) unless the CRD preserves
  unknown fields there. CRD sources: KEDA and prometheus-operator CRDs from
  their Go modules (`go mod download`), Strimzi's generated from its Maven
  Central artifacts (io.strimzi:api + io.strimzi:crd-generator).

Usage: python tests/deploy/vendor_schemas.py <kubernetes-validate schema dir> <crd.yaml>...

How the inputs were fetched for the vendored files (all from package registries):

    pip download --no-deps kubernetes-validate==1.37.0   # unzip; use .../v1.33.0-local-strict
    go mod download github.com/kedacore/keda/v2@v2.17.2  # config/crd/bases/keda.sh_scaledobjects.yaml
    go mod download github.com/prometheus-operator/prometheus-operator@v0.85.0
        # example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,prometheusrules}.yaml
    # Strimzi: a pom depending on io.strimzi:api:0.45.0 and io.strimzi:crd-generator:0.45.0,
    # `mvn dependency:copy-dependencies -DoutputDirectory=libs`, then
    java -cp 'libs/*' io.strimzi.crdgenerator.CrdGenerator --yaml --crd-api-version v1 \
        --api-versions v1beta2 --storage-version v1beta2 io.strimzi.api.kafka.model.topic.KafkaTopic=kafkatopic.yaml
    # (and io.strimzi.api.kafka.model.user.KafkaUser=$PWD/kafkauser.yaml: an absolute path, or it fails)
    go mod download github.com/compose-spec/compose-go/v2@v2.9.0   # schema/compose-spec.json, copied as is
    npm pack @asyncapi/specs@6.11.1   # package/schemas/3.0.0.json, copied as is to asyncapi-3.0.0.json
                                      # (the official AsyncAPI 3.0.0 schema; tests/unit/test_asyncapi.py)
"""

import json
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).parent / "schemas"
K8S_KINDS = ("deployment-apps-v1", "service-v1", "serviceaccount-v1", "configmap-v1", "job-batch-v1",
             "poddisruptionbudget-policy-v1", "networkpolicy-networking-v1", "namespace-v1")
CRD_KINDS = {"KafkaTopic", "KafkaUser", "ScaledObject", "ServiceMonitor", "PrometheusRule"}


def _refs(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[1]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _local_refs(node: object) -> object:
    if isinstance(node, dict):
        return {k: ("#/$defs/" + v.rsplit("/", 1)[1] if k == "$ref" else _local_refs(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_local_refs(v) for v in node]
    return node


def vendor_kubernetes(schema_dir: Path) -> None:
    definitions = json.loads((schema_dir / "_definitions.json").read_text())["$defs"]
    for kind in K8S_KINDS:
        schema = json.loads((schema_dir / f"{kind}.json").read_text())
        schema.pop("$id", None)
        needed, todo = set(), _refs(schema)
        while todo:
            name = todo.pop()
            needed.add(name)
            todo |= _refs(definitions[name]) - needed
        schema["$defs"] = {name: definitions[name] for name in sorted(needed)}
        (OUT / "kubernetes" / f"{kind}.json").write_text(json.dumps(_local_refs(schema), sort_keys=True) + "\n")


def _strict(node: object) -> object:
    """openapi2jsonschema's strict mode: objects with declared properties reject others."""
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def vendor_crds(paths: list[Path]) -> None:
    for path in paths:
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            if spec["names"]["kind"] not in CRD_KINDS:
                continue
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                out = OUT / spec["group"] / f"{spec['names']['kind'].lower()}_{version['name']}.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(_strict(version["schema"]["openAPIV3Schema"]), sort_keys=True) + "\n")


if __name__ == "__main__":
    (OUT / "kubernetes").mkdir(parents=True, exist_ok=True)
    vendor_kubernetes(Path(sys.argv[1]))
    vendor_crds([Path(p) for p in sys.argv[2:]])
