"""Promises about the repository itself: the README's commands and CI agree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_command(heading: str) -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"## {heading}", 1)[1]
    match = re.search(r"```(?:sh|bash)?\n(.+?)\n```", section, re.S)
    assert match is not None, f"no command block under '## {heading}'"
    return match.group(1).strip()


def test_ci_runs_the_readmes_test_command() -> None:
    command = _readme_command("Run the tests")
    assert command.startswith("python3 -m venv .venv && ")
    assert command in (ROOT / ".ci" / "run").read_text()


def test_ci_fails_when_pytest_collects_nothing() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    assert '"$rc" -eq 5' in ci


def test_readme_start_command_needs_no_services() -> None:
    command = _readme_command("Start the platform")
    assert "DATABASE_URL" not in command
    assert "REDIS_URL" not in command
