"""Shared fixtures. Tiers: tests/unit (no containers), tests/integration, tests/emulated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 3600
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m rvtorch ARGS`` as a user would and capture its output."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "rvtorch", *args],
        capture_output=True, text=True, env=full_env, timeout=timeout, check=False,
    )
