"""Prints which fault points fired, when the simulation seeds ran in this session."""

from __future__ import annotations

import pytest

from sim.runner import SUMMARY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY.seeds:
        terminalreporter.write_sep("-", "simulation: fault points fired")
        for line in SUMMARY.lines():
            terminalreporter.write_line(line)
