"""Fixtures shared by the torch build tests: one cache for the source tarball, the patched trees,
ccache and the deployed recipe OpenBLAS, so each is made once per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rvtorch.paths import cache_dir
from tests.conftest import ROOT


@pytest.fixture(scope="session")
def itest_cache() -> Path:
    path = Path(os.environ.get("RVTORCH_ITEST_CACHE") or cache_dir() / "itest")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def env(itest_cache: Path) -> dict[str, str]:
    # The image store is the engine's, not the cache: the shared toolchain image is reused.
    return {"RVTORCH_CACHE": str(itest_cache), "RVTORCH_ROOT": str(ROOT)}
