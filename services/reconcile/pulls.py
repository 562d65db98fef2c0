"""Pulling every configured gateway's settlement reports into the ingest path uploads use.

Each gateway is pulled on its own schedule, so one that hangs or is down holds
up no other: its failure is logged, counted and asked again next round from
the same cursor. A file is ingested and the gateway's cursor moved in one
transaction (compare-and-set on the cursor read before the pull): a crash
before the commit re-pulls the file, and two replicas pulling the same file
ingest it once.
"""

import structlog
from prometheus_client import Counter, Gauge

from services.reconcile import store
from services.reconcile.reports import ReportFile, ReportSource, ReportUnavailable
from services.reconcile.settlement_files import missing_columns
from shared.runtime.stage import Stage

log = structlog.get_logger()
PULL_FAILURES = Counter("refund_reconcile_report_pull_failures",
                        "Settlement report pulls that failed (gateway down, refused, bad answer); retried next round",
                        ["gateway"])
FILES_PULLED = Counter("refund_reconcile_report_files_pulled", "Settlement report files pulled and ingested",
                       ["gateway"])
LINE_ERRORS = Counter("refund_reconcile_report_line_errors",
                      "Rows of pulled settlement reports that could not be read (kept on the report's record)",
                      ["gateway"])
LAST_PULLED = Gauge("refund_reconcile_report_last_pull_timestamp_seconds",
                    "When a pull of the gateway's reports last completed without failing", ["gateway"])


class ReportPuller:
    """One gateway's reports, from its cursor in reconcile's schema, ingested under the gateway's route name."""

    def __init__(self, stage: Stage, gateway: str, source: ReportSource, *, max_files_per_round: int = 50) -> None:
        self.stage = stage
        self.gateway = gateway
        self.source = source
        self.max_files_per_round = max_files_per_round
        PULL_FAILURES.labels(gateway)  # exported as 0 before the first failure, so rate() alerts see it

    async def pull(self) -> int:
        """One round: every file the gateway has after the cursor (up to the bound); the new lines ingested."""
        lines = 0
        try:
            for _ in range(self.max_files_per_round):
                seen = await store.report_cursor(self.stage.pool, self.gateway)
                position = seen["position"] if seen and seen["kind"] == self.source.kind else None
                found = await self.source.next_file(position)
                if found is None:
                    break
                ingested = await self._ingest(seen, found)
                if ingested is None:  # another pull moved the cursor, or only the cursor moved: next round
                    break
                lines += ingested
        except Exception as error:
            PULL_FAILURES.labels(self.gateway).inc()
            unexpected = not isinstance(error, ReportUnavailable)
            log.warning("report_pull_failed", gateway=self.gateway, error=str(error) or repr(error),
                        exc_info=unexpected)
            return lines
        LAST_PULLED.labels(self.gateway).set_to_current_time()
        return lines

    async def _ingest(self, seen, found: ReportFile) -> int | None:
        """The file's new lines, ingested with the cursor moved; None if there was no file (only the cursor
        moved) or another pull moved the cursor first."""
        if found.text is not None and (missing := missing_columns(self.source.kind, found.text)):
            raise ReportUnavailable(f"{found.name} is not a {self.source.kind} settlement report "
                                    f"(no {', '.join(sorted(missing))})")
        async with self.stage.pool.acquire() as conn, conn.transaction():
            if not await store.move_report_cursor(conn, self.gateway, seen=seen, kind=self.source.kind,
                                                  position=found.position, files=int(found.text is not None)):
                return None
            summary = None if found.text is None else await store.ingest_report(
                conn, gateway=self.gateway, fmt=self.source.kind, text=found.text, received_from=f"pull:{found.name}")
        if found.problem:
            raise ReportUnavailable(found.problem)
        if summary is None:
            return None
        FILES_PULLED.labels(self.gateway).inc()
        if summary["errors"]:
            LINE_ERRORS.labels(self.gateway).inc(len(summary["errors"]))
            log.error("pulled_report_errors", gateway=self.gateway, file=found.name, errors=summary["errors"][:5])
        self.stage.committed.set()  # wake the matcher
        return summary["lines_new"]
