"""Reconcile's report sources against a small real HTTP gateway: the cases the simulator never shows.

A Stripe report run that is still pending or has failed, a file served from another host, an Adyen
batch not closed yet or credentials refused. Real HTTP on a local port (stdlib server), no mocks.
"""

import ast
import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from services.reconcile.reports import AdyenReports, ReportUnavailable, StripeReports
from shared.runtime.gateway_routes import GatewayRoute

ROOT = Path(__file__).resolve().parents[2]
CSV = "balance_transaction_id,currency,gross,fee,net,reporting_category,source_id\n"


class FakeGateway(BaseHTTPRequestHandler):
    """Answers from `self.server.answers`: {(method, path): [(status, body), ...]} (the last one repeats)."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self.server.seen.append((self.command, self.path, self.headers.get("authorization"), parse_qs(body)))
        queue = self.server.answers.get((self.command, self.path.split("?")[0]))
        status, payload = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else (404, {"error": {}})
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "text/csv" if isinstance(payload, str) else "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGateway)
    server.answers, server.seen = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.base = f"http://127.0.0.1:{server.server_address[1]}/acct"
    yield server
    server.shutdown()
    server.server_close()


def _run(run_id: str, status: str, base: str, end: int = 200, url: str | None = None) -> dict:
    return {"id": run_id, "object": "reporting.report_run", "status": status, "error": "boom" if status == "failed"
            else None, "parameters": {"interval_start": 100, "interval_end": end},
            "result": None if status != "succeeded" else {
                "id": "file_1", "object": "file", "url": url or f"{base}/v1/files/file_1/contents"}}


def _stripe(fake) -> StripeReports:
    return StripeReports(GatewayRoute(kind="stripe", base_url=fake.base, api_key="sk_test_x", webhook_secret="whsec",
                                      timeout_seconds=2))


async def test_a_pending_stripe_run_is_kept_in_the_cursor_and_its_file_read_when_it_succeeds(fake):
    fake.answers = {
        ("GET", "/acct/v1/reporting/report_types/balance_change_from_activity.itemized.1"): [
            (200, {"id": "balance_change_from_activity.itemized.1", "object": "reporting.report_type",
                   "data_available_start": 100, "data_available_end": 200})],
        ("POST", "/acct/v1/reporting/report_runs"): [(200, _run("frr_1", "pending", fake.base))],
        ("GET", "/acct/v1/reporting/report_runs/frr_1"): [(200, _run("frr_1", "succeeded", fake.base))],
        ("GET", "/acct/v1/files/file_1/contents"): [(200, CSV)],
    }
    source = _stripe(fake)
    try:
        pending = await source.next_file(None)
        assert (json.loads(pending.position), pending.text) == ({"interval_end": None, "run": "frr_1"}, None)
        created = next(s for s in fake.seen if s[0] == "POST")
        assert created[3] == {"report_type": ["balance_change_from_activity.itemized.1"],
                              "parameters[interval_start]": ["100"], "parameters[interval_end]": ["200"]}
        done = await source.next_file(pending.position)
        assert (json.loads(done.position), done.text, done.problem) == ({"interval_end": 200}, CSV, None)
        assert fake.seen[-1][:3] == ("GET", "/acct/v1/files/file_1/contents", "Bearer sk_test_x")
        # Nothing new is complete yet: no run is asked for.
        assert await source.next_file(done.position) is None
        assert [s[0] for s in fake.seen].count("POST") == 1
    finally:
        await source.close()


async def test_a_failed_stripe_run_is_dropped_from_the_cursor_and_named(fake):
    fake.answers = {("GET", "/acct/v1/reporting/report_runs/frr_2"): [(200, _run("frr_2", "failed", fake.base))]}
    source = _stripe(fake)
    try:
        failed = await source.next_file(json.dumps({"interval_end": 150, "run": "frr_2"}))
        assert json.loads(failed.position) == {"interval_end": 150} and failed.text is None
        assert "frr_2 failed" in failed.problem
    finally:
        await source.close()


async def test_a_stripe_file_on_another_host_is_not_fetched_with_the_key(fake):
    fake.answers = {("GET", "/acct/v1/reporting/report_runs/frr_3"): [
        (200, _run("frr_3", "succeeded", fake.base, url="http://elsewhere.example/v1/files/file_1/contents"))]}
    source = _stripe(fake)
    try:
        with pytest.raises(ReportUnavailable, match="not the gateway's own host"):
            await source.next_file(json.dumps({"interval_end": 150, "run": "frr_3"}))
    finally:
        await source.close()


async def test_a_stripe_error_answer_is_a_report_unavailable(fake):
    fake.answers = {("GET", "/acct/v1/reporting/report_types/balance_change_from_activity.itemized.1"): [
        (401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided."}})]}
    source = _stripe(fake)
    try:
        with pytest.raises(ReportUnavailable, match="401"):
            await source.next_file(None)
    finally:
        await source.close()


def _adyen(fake, **credentials) -> AdyenReports:
    return AdyenReports(GatewayRoute(kind="adyen", base_url=fake.base, api_key="k", hmac_key="00",
                                     merchant_account="M", timeout_seconds=2, **credentials))


async def test_adyen_batches_are_read_in_order_with_basic_auth_until_one_is_not_closed(fake):
    fake.answers = {("GET", "/acct/reports/settlement_detail_report_batch_3.csv"): [(200, "Type\n")]}
    source = _adyen(fake, report_user="ru", report_password="rp")
    try:
        found = await source.next_file("2")
        assert (found.position, found.name, found.text) == ("3", "settlement_detail_report_batch_3.csv", "Type\n")
        assert fake.seen[-1][2] == "Basic " + base64.b64encode(b"ru:rp").decode()
        assert await source.next_file("3") is None  # batch 4 is not closed: 404
    finally:
        await source.close()


async def test_adyen_refused_credentials_or_none_configured_are_a_report_unavailable(fake):
    fake.answers = {("GET", "/acct/reports/settlement_detail_report_batch_1.csv"): [(401, {"status": 401})]}
    refused, unconfigured = _adyen(fake, report_user="ru", report_password="wrong"), _adyen(fake)
    try:
        with pytest.raises(ReportUnavailable, match="HTTP 401"):
            await refused.next_file(None)
        with pytest.raises(ReportUnavailable, match="report_user"):
            await unconfigured.next_file(None)
    finally:
        await refused.close()
        await unconfigured.close()


def test_reconcile_reaches_gateways_only_over_http():
    """No gatewaysim import and no read of the simulator's schema anywhere in reconcile."""
    for path in (ROOT / "services" / "reconcile").rglob("*"):
        if path.suffix not in (".py", ".sql"):
            continue
        text = path.read_text()
        assert "gateway_sim." not in text, path
        if path.suffix == ".py":
            imported = {alias.name for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Import)
                        for alias in node.names}
            imported |= {node.module for node in ast.walk(ast.parse(text))
                         if isinstance(node, ast.ImportFrom) and node.module}
            assert not {name for name in imported if name.split(".")[0] == "gatewaysim"}, path
