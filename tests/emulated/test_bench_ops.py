"""``rvtorch bench ops`` under the counting QEMU, end to end, on the Debian stand-in wheel
(tests/emulated/debian_wheel.py): a real riscv64 torch 2.6.0 that has DEFAULT only.

Such a wheel must not produce a DEFAULT-vs-RVV "comparison": the run fails (exit 5) and writes
nothing. As a trial run (``--expect-rvv no``) it counts the whole op table in both processes,
and the two agree (same capability, same code) within the noise of the interpreter.

Cost: the stand-in wheel (cached, shared with test_wheel_validate.py), the counting QEMU (built
once per cache: a few minutes from clean), then two runs, each a pip install into a clean venv
under QEMU (30 s to 4 min, by load) and one or two `import torch` processes under the counting
QEMU (15 to 30 s each).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from rvtorch import ops_target
from tests.conftest import run_cli
from tests.emulated.debian_wheel import debian_torch_wheel

pytestmark = pytest.mark.emulated


@pytest.fixture(scope="module")
def wheel() -> Path:
    return debian_torch_wheel("riscv64")


def test_a_wheel_without_rvv_cannot_make_the_comparison(wheel: Path, tmp_path: Path) -> None:
    out = tmp_path / "aten_rvv.json"
    t0 = time.monotonic()
    r = run_cli("bench", "ops", "--wheel", str(wheel), "--cpu", "rvv128", "--json", str(out),
                timeout=3600)
    sys.stderr.write(f"bench ops (expect RVV) on the DEFAULT-only wheel: exit {r.returncode} in "
                     f"{time.monotonic() - t0:.0f} s\n")
    assert r.returncode == 5, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("rvtorch: error: on rvv128 with ATEN_CPU_CAPABILITY unset torch runs "
                           "capability 'NO AVX', expected 'RVV'"), last
    assert not out.exists()


def test_trial_run_counts_every_op_and_both_processes_agree(wheel: Path, tmp_path: Path) -> None:
    out = tmp_path / "trial.json"
    t0 = time.monotonic()
    r = run_cli("bench", "ops", "--wheel", str(wheel), "--cpu", "rvv256", "--expect-rvv", "no",
                "--n", "3", "--json", str(out), timeout=3600)
    sys.stderr.write(f"bench ops --expect-rvv no: exit {r.returncode} in "
                     f"{time.monotonic() - t0:.0f} s\n")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["meta"]["expect_rvv"] is False and report["meta"]["n"] == 3
    assert report["meta"]["cpu_models"] == {"rvv256": "rv64,v=true,vext_spec=v1.0,vlen=256"}
    assert len(report["meta"]["wheel"]["sha256"]) == 64
    for cap in ("default", "chosen"):
        proc = report["processes"][f"rvv256/{cap}"]
        assert proc["capability"] == "DEFAULT" and proc["threads"] == 1
    keys = [ops_target.op_key(n, d) for n, d, _ in ops_target.op_table()]
    assert sorted(report["ops"]) == sorted(keys)
    for key in keys:
        row = report["ops"][key]["rvv256"]
        # A call does real work: more than its one-element fixed cost, per element too.
        assert row["default_insns"] > row["default_fixed_insns"] > 1000, key
        assert row["default_insns_per_element"] > 1, key
        # Scalar code on both sides: no vector instructions, the same count within 1 %.
        assert row["rvv_vector_insns"] == 0 and row["default_vector_insns"] == 0, key
        assert 0.99 <= row["ratio"] <= 1.01, (key, row)
    assert report["summary"]["ops"] == len(keys) >= 24
    assert f"{'add':<16} | " in r.stdout
