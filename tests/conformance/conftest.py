"""Prints the conformance figures at the end of a run that included the suite."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.conformance.harness import LEDGER


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not LEDGER.compared:
        return
    terminalreporter.write_sep("-", "conformance with the official clients")
    terminalreporter.write_line(
        f"{LEDGER.compared} requests compared, {LEDGER.equal} equal, "
        f"{len(LEDGER.allowed)} allowed differences"
    )
    for (reference, field), requests in sorted(Counter(LEDGER.allowed).items()):
        plural = "s" if requests > 1 else ""
        terminalreporter.write_line(
            f"  allowed: {reference}: {field} in {requests} request{plural}"
        )
