"""Settlement reports pulled from a gateway over its own HTTP API: the port and its two adapters.

A source reads the gateway's next report file after an opaque position (the
cursor reconcile keeps per gateway) and says what the position is after it.
It reads only: the file is ingested, and the cursor moved, by the caller in one
transaction (services/reconcile/pulls.py), so a crash in between re-pulls.

- Stripe-shaped (Reports API): report type `balance_change_from_activity.itemized.1`;
  a report run over [last interval_end, data_available_end); its file's contents.
  Position: `{"interval_end": <unix>}`, plus `"run"` while a run is still pending.
- Adyen-shaped (Settlement details report): `settlement_detail_report_batch_<n>.csv`
  with HTTP basic auth, 404 until batch n is closed. Position: the last batch downloaded.
"""

import json
from dataclasses import dataclass
from typing import Protocol

import httpx
import stripe

from shared.runtime.gateway_routes import GatewayRoute

STRIPE_REPORT_TYPE = "balance_change_from_activity.itemized.1"
# Where Stripe serves file contents (the API host serves only the file object).
STRIPE_FILES_BASE = stripe.DEFAULT_UPLOAD_API_BASE


class ReportUnavailable(Exception):
    """The gateway did not give its report: down, timed out, refused us, or answered something else."""


@dataclass(frozen=True)
class ReportFile:
    """What one read of a gateway's reports gives: the cursor after it, and the file if there is one."""

    position: str  # the cursor after this file
    name: str  # the gateway's name for the file (recorded as where the report came from)
    text: str | None  # the CSV; None when only the cursor moves (e.g. a Stripe report run still pending)
    problem: str | None = None  # the gateway's own failure (a failed report run): counted, then asked again


class ReportSource(Protocol):
    """One gateway's settlement reports, read from a position."""

    kind: str  # the route's kind: the file format (settlement_files) and the kind of its positions

    async def next_file(self, position: str | None) -> ReportFile | None:
        """The next file after `position` (None: from the start), or None if the gateway has none yet.

        Raises ReportUnavailable when the gateway does not answer as it should.
        """

    async def close(self) -> None: ...


class StripeReports:
    """Stripe's Reports API through the official `stripe` package; the file's contents through httpx.

    The package has no call that downloads a file's contents: its requestor decodes every answer as
    a JSON object, and Stripe serves contents as raw CSV (from files.stripe.com). So the contents
    are fetched with the same API key, only from the route's base or Stripe's files host.
    """

    kind = "stripe"

    def __init__(self, route: GatewayRoute) -> None:
        self.base = route.base
        self.api_key = route.api_key.get_secret_value()
        self._stripe_http = stripe.HTTPXClient(timeout=route.timeout_seconds)
        self.client = stripe.StripeClient(
            self.api_key, base_addresses={"api": self.base},
            # A failed pull is retried next round from the cursor, not by the HTTP client.
            max_network_retries=0, http_client=self._stripe_http)
        self.http = httpx.AsyncClient(timeout=route.timeout_seconds)

    async def next_file(self, position: str | None) -> ReportFile | None:
        cursor = json.loads(position) if position else {}
        try:
            run = await self._run(cursor)
            return None if run is None else await self._file(cursor, run)
        except stripe.StripeError as error:
            raise ReportUnavailable(f"stripe answered {error.http_status or 'nothing'}: {error}") from error
        except httpx.HTTPError as error:
            raise ReportUnavailable(f"report file download failed: {error!r}") from error

    async def _run(self, cursor: dict) -> dict | None:
        """The pending run of the cursor, or a new run from its interval_end; None when no new data is complete."""
        reporting = self.client.v1.reporting
        if cursor.get("run"):
            return (await reporting.report_runs.retrieve_async(cursor["run"])).to_dict()
        available = (await reporting.report_types.retrieve_async(STRIPE_REPORT_TYPE)).to_dict()
        # Nothing is reportable before data_available_start, so a cursor before it starts there.
        start = max(cursor.get("interval_end") or 0, available["data_available_start"])
        end = available["data_available_end"]
        if end <= start:
            return None
        return (await reporting.report_runs.create_async(
            {"report_type": STRIPE_REPORT_TYPE, "parameters": {"interval_start": start, "interval_end": end}})).to_dict()

    async def _file(self, cursor: dict, run: dict) -> ReportFile:
        since = {"interval_end": cursor.get("interval_end")}
        if run["status"] == "pending":
            return ReportFile(json.dumps(since | {"run": run["id"]}), run["id"], None)
        if run["status"] != "succeeded":  # dropped from the cursor: the next round asks for the interval again
            return ReportFile(json.dumps(since), run["id"], None,
                              problem=f"report run {run['id']} {run['status']}: {run.get('error')}")
        contents = await self._download(run["result"])
        return ReportFile(json.dumps({"interval_end": run["parameters"]["interval_end"]}),
                          f"{run['id']}/{run['result']['id']}", contents)

    async def _download(self, file: dict) -> str:
        url = file.get("url") or f"{STRIPE_FILES_BASE}/v1/files/{file['id']}/contents"
        if not url.startswith((f"{self.base}/", f"{STRIPE_FILES_BASE}/")):
            raise ReportUnavailable(f"report file {file['id']} is served from {url}, not the gateway's own host")
        answer = await self.http.get(url, headers={"Authorization": f"Bearer {self.api_key}"})
        answer.raise_for_status()
        return answer.text

    async def close(self) -> None:
        await self._stripe_http.close_async()
        await self.http.aclose()


class AdyenReports:
    """Adyen's Settlement details report, one file per closed settlement batch, numbered from 1."""

    kind = "adyen"

    def __init__(self, route: GatewayRoute) -> None:
        self.base = route.base
        self.auth = (route.report_user, route.report_password.get_secret_value()) \
            if route.report_user and route.report_password else None
        self.http = httpx.AsyncClient(timeout=route.timeout_seconds)

    async def next_file(self, position: str | None) -> ReportFile | None:
        if self.auth is None:
            raise ReportUnavailable("the route has no report_user/report_password to download reports with")
        name = f"settlement_detail_report_batch_{int(position or 0) + 1}.csv"
        try:
            answer = await self.http.get(f"{self.base}/reports/{name}", auth=self.auth)
        except httpx.HTTPError as error:
            raise ReportUnavailable(f"{name}: {error!r}") from error
        if answer.status_code == 404:  # the batch is not closed yet
            return None
        if answer.status_code != 200:
            raise ReportUnavailable(f"{name}: HTTP {answer.status_code} {answer.text[:200]}")
        return ReportFile(str(int(position or 0) + 1), name, answer.text)

    async def close(self) -> None:
        await self.http.aclose()


def report_source(route: GatewayRoute) -> ReportSource:
    return {"stripe": StripeReports, "adyen": AdyenReports}[route.kind](route)
