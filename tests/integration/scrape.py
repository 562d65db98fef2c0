"""Read a running service's /metrics."""

import httpx
from prometheus_client.parser import text_string_to_metric_families


def samples(stack, service: str, name: str, **labels: str) -> list:
    text = httpx.get(f"{stack.service_url(service)}/metrics", timeout=10).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def total(stack, service: str, name: str, **labels: str) -> float:
    return sum(s.value for s in samples(stack, service, name, **labels))
