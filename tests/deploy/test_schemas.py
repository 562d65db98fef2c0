"""Every rendered overlay is valid Kubernetes, Strimzi, KEDA and prometheus-operator."""

import copy

import yaml

from tests.deploy.conftest import OVERLAYS, kubeconform


def test_there_are_local_and_prod_overlays():
    assert {"local", "prod"} <= set(OVERLAYS)


def test_every_rendered_object_is_valid_against_the_vendored_schemas(rendered_files, rendered):
    for overlay, path in rendered_files.items():
        result = kubeconform(path)
        assert result.returncode == 0, f"{overlay}:\n{result.stdout}\n{result.stderr}"
        count = len(rendered[overlay])
        assert f"Summary: {count} resources found in 1 file - Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" \
            in result.stdout, result.stdout


def _broken(docs: list[dict]) -> list[tuple[str, dict]]:
    """One object per kind family with a mistake its schema must catch."""
    by_kind = {d["kind"]: d for d in docs}
    cases = []
    deployment = copy.deepcopy(by_kind["Deployment"])
    deployment["spec"]["replicaz"] = 2  # a typo: strict validation rejects unknown fields
    cases.append(("Deployment with unknown field", deployment))
    probe = copy.deepcopy(by_kind["Deployment"])
    probe["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] = 42
    cases.append(("Deployment with a numeric probe path", probe))
    topic = copy.deepcopy(by_kind["KafkaTopic"])
    topic["spec"]["partitions"] = 0
    cases.append(("KafkaTopic with zero partitions", topic))
    scaled = copy.deepcopy(by_kind["ScaledObject"])
    del scaled["spec"]["scaleTargetRef"]
    cases.append(("ScaledObject without a target", scaled))
    rule = copy.deepcopy(by_kind["PrometheusRule"])
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    cases.append(("PrometheusRule with a bad duration", rule))
    monitor = copy.deepcopy(by_kind["ServiceMonitor"])
    monitor["spec"]["endpoints"][0]["interval"] = 30
    cases.append(("ServiceMonitor with a numeric interval", monitor))
    return cases


def test_the_schemas_reject_broken_objects(rendered, tmp_path):
    for name, doc in _broken(rendered["prod"]):
        path = tmp_path / "broken.yaml"
        path.write_text(yaml.safe_dump(doc))
        result = kubeconform(path)
        assert result.returncode != 0 and "Invalid: 1" in result.stdout, f"{name} was accepted:\n{result.stdout}"
