"""Rendering: results to stdout (a table, or one JSON object), everything else to stderr."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from confide.attestation import Check, Quote, SgxReportBody, VerifiedQuote
from confide.errors import AttestationError, Error

_PIPE_WIDTH = 200


def stderr_logger(name: str) -> logging.Logger:
    """The logger ``name`` (and those below it), as lines on stderr, INFO and up."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class Output:
    """One place that knows where things are printed.

    ``out`` carries results (stdout), ``err`` carries progress, warnings and
    errors (stderr), so ``--json`` output can be piped safely.
    """

    def __init__(self, *, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        # Piped output keeps full hex values on one line instead of rich's 80 columns.
        width = None if sys.stdout.isatty() else _PIPE_WIDTH
        self.out = Console(file=sys.stdout, soft_wrap=True, highlight=False, width=width)
        self.err = Console(file=sys.stderr, soft_wrap=True, highlight=False)

    def json(self, payload: Mapping[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()

    def error(self, err: Error) -> None:
        self.err.print(f"[bold red]error:[/] {escape(str(err))}")

    def warn(self, text: str) -> None:
        self.err.print(f"[bold yellow]warning:[/] {escape(text)}")

    def info(self, text: str) -> None:
        self.err.print(escape(text))

    def verification(self, result: VerifiedQuote) -> None:
        """A verdict line and the table of what was checked."""
        if self.json_mode:
            self.json(result.to_dict())
            return
        kind = "SIMULATED " if result.simulated else ""
        self.out.print(
            f"[bold green]VERIFIED[/] {kind}{result.tee.upper()} quote v{result.quote_version}, "
            f"TCB {result.tcb_status.value}"
            + (f" ({', '.join(result.advisory_ids)})" if result.advisory_ids else "")
        )
        if result.simulated:
            self.warn("this quote comes from a simulated TEE: it proves nothing about hardware")
        self._checks(result.checks)
        self._measurements(result.to_dict())

    def rejection(self, err: AttestationError, quote: Quote | None) -> None:
        """The verdict for evidence that is not acceptable."""
        if self.json_mode:
            payload = quote_summary(quote)
            payload["error"] = {"code": err.code, "message": str(err)}
            self.json(payload)
            return
        self.out.print(f"[bold red]REJECTED[/] {escape(err.code)}")
        checks = [c for c in err.checks if isinstance(c, Check)]
        checks.append(Check(err.check, "failed", _failure_detail(err)))
        self._checks(checks)

    def _checks(self, checks: Iterable[Check]) -> None:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail", overflow="fold")
        styles = {"passed": "green", "failed": "bold red", "not requested": "dim"}
        for c in checks:
            table.add_row(
                escape(c.name),
                f"[{styles[c.outcome]}]{c.outcome}[/]",
                escape(c.detail),
            )
        self.out.print(table)

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        """Rows under a header line, each cell printed as is (no markup)."""
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        self.out.print(table)

    def fields(self, rows: Iterable[tuple[str, str]]) -> None:
        """One ``field value`` line per row (values folded, printed as is)."""
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for name, value in rows:
            table.add_row(name, escape(value))
        self.out.print(table)

    def _measurements(self, summary: Mapping[str, Any]) -> None:
        keys = (
            "mrenclave",
            "mrsigner",
            "isv_prod_id",
            "isv_svn",
            "mr_td",
            "rtmr0",
            "rtmr1",
            "rtmr2",
            "rtmr3",
            "report_data",
            "fmspc",
        )
        self.fields((key, str(summary[key])) for key in keys if summary.get(key) is not None)


def quote_summary(quote: Quote | None) -> dict[str, Any]:
    """The JSON fields known from a parsed (not necessarily verified) quote."""
    summary: dict[str, Any] = {
        "verified": False,
        "tee": None,
        "quote_version": None,
        "tcb_status": None,
        "advisory_ids": [],
        "mrenclave": None,
        "mrsigner": None,
        "isv_prod_id": None,
        "isv_svn": None,
        "mr_td": None,
        "rtmr0": None,
        "rtmr1": None,
        "rtmr2": None,
        "rtmr3": None,
        "report_data": None,
        "debug": None,
        "simulated": None,
        "error": None,
    }
    if quote is None:
        return summary
    body = quote.body
    summary.update(
        tee="tdx" if quote.is_tdx else "sgx",
        quote_version=quote.header.version,
        report_data=body.report_data.hex(),
        debug=body.debug,
    )
    if isinstance(body, SgxReportBody):
        summary.update(
            mrenclave=body.mr_enclave.hex(),
            mrsigner=body.mr_signer.hex(),
            isv_prod_id=body.isv_prod_id,
            isv_svn=body.isv_svn,
        )
    else:
        summary["mr_td"] = body.mr_td.hex()
        for i, rtmr in enumerate(body.rtmrs):
            summary[f"rtmr{i}"] = rtmr.hex()
    return summary


def _failure_detail(err: AttestationError) -> str:
    parts = []
    if err.observed is not None or err.expected is not None:
        parts.append(f"observed {_plain(err.observed)}, expected {_plain(err.expected)}")
    if err.detail:
        parts.append(err.detail)
    if err.hint:
        parts.append(err.hint)
    return "; ".join(parts)


def _plain(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def escape(text: str) -> str:
    """``text`` printed as is by rich (no markup)."""
    return text.replace("[", "\\[")
