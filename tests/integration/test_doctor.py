"""`rvtorch doctor` on the real machine: each gap with its fix; exit 2 iff one is required."""

from __future__ import annotations

import json

import pytest

from rvtorch.targets import matrix
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_doctor_reports_every_area_with_fixes() -> None:
    r = run_cli("doctor", "--json", timeout=300)
    data = json.loads(r.stdout)
    found = data["findings"]
    missing = [f for f in found if f["status"] == "missing"]
    assert r.returncode == (2 if missing else 0)
    assert data["ok"] == (not missing)
    areas = {f["area"] for f in found}
    assert {"engine", "debootstrap", "debian mirror", "cache", "root"} <= areas
    for t in matrix().targets:
        assert t.qemu_binary in areas and f"binfmt {t.arch}" in areas
        assert {f"cpu {t.arch}/{c.name}" for c in t.cpu} <= areas
    for f in found:
        assert f["status"] in ("ok", "warn", "missing")
        if f["status"] != "ok":
            assert f["fix"], f


def test_doctor_unwritable_cache_is_missing_with_fix() -> None:
    r = run_cli("doctor", "--json", env={"RVTORCH_CACHE": "/proc/x"}, timeout=300)
    assert r.returncode == 2
    cache = [f for f in json.loads(r.stdout)["findings"] if f["area"] == "cache"]
    assert cache[0]["status"] == "missing" and "RVTORCH_CACHE" in cache[0]["fix"]
