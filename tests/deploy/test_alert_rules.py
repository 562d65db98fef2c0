"""deploy/prometheus/rules.yml: promtool accepts it, its unit tests pass, every alert is complete and tested."""

import re
import subprocess

import pytest
import yaml

from tests.deploy.conftest import ROOT, tool

RULES = ROOT / "deploy/prometheus/rules.yml"
RULE_TESTS = sorted((ROOT / "deploy/prometheus/tests").glob("*.yml"))

def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules():
    result = subprocess.run([tool("promtool"), "check", "rules", str(RULES)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass():
    assert RULE_TESTS, "no rule unit tests in deploy/prometheus/tests"
    result = subprocess.run([tool("promtool"), "test", "rules", *map(str, RULE_TESTS)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_alert_is_complete(rule):
    assert rule["labels"]["severity"] in ("page", "ticket")
    for key in ("summary", "description", "runbook_url"):
        assert rule["annotations"].get(key), f"{rule['alert']} has no {key}"
    assert (ROOT / rule["annotations"]["runbook_url"]).is_file(), f"{rule['alert']}: runbook missing"


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_every_alert_is_tested_firing_and_not_firing(rule):
    cases = [case for path in RULE_TESTS for test in yaml.safe_load(path.read_text())["tests"]
             for case in test.get("alert_rule_test", []) if case["alertname"] == rule["alert"]]
    assert any(case.get("exp_alerts") for case in cases), f"{rule['alert']} is never tested firing"
    assert any(not case.get("exp_alerts") for case in cases), f"{rule['alert']} is never tested not firing"


def test_runbooks_name_their_alerts():
    for rule in alerts():
        text = (ROOT / rule["annotations"]["runbook_url"]).read_text()
        assert re.search(rf"\b{rule['alert']}\b", text), f"{rule['annotations']['runbook_url']} does not cover {rule['alert']}"
