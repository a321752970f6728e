"""GEMM benchmark pieces that need no QEMU: RVV counting, summary and the pass/fail rules."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rvtorch import gemm_bench, rvv_count
from rvtorch.errors import ValidationError

DISASSEMBLY = """
libopenblas.so:     file format elf64-littleriscv

Disassembly of section .text:

0000000000001000 <openblas_get_corename>:
    1000:	addi	sp,sp,-16
    1004:	ret

0000000000002000 <sgemm_kernel_RISCV64_ZVL128B>:
    2000:	vsetvli	t0,a0,e32,m2,ta,ma
    2004:	vle32.v	v0,(a1)
    2008:	vfmacc.vf	v8,fa0,v0
    200c:	ret

0000000000003000 <sgemm_kernel_RISCV64_GENERIC>:
    3000:	flw	fa5,0(a1)
    3004:	fmadd.s	fa0,fa5,fa4,fa0
"""


def test_rvv_count_groups_by_kernel_set(tmp_path: Path) -> None:
    fake = tmp_path / "objdump"
    (tmp_path / "out.txt").write_text(DISASSEMBLY)
    fake.write_text(f"#!/bin/sh\ncat {tmp_path / 'out.txt'}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    got = rvv_count.count("libopenblas.so", str(fake))
    assert got["instructions"] == 8 and got["vector"] == 3
    assert got["by_kernel_set"]["RISCV64_ZVL128B"] == {"instructions": 4, "vector": 3}
    assert got["by_kernel_set"]["RISCV64_GENERIC"] == {"instructions": 2, "vector": 0}
    assert got["by_kernel_set"]["common"]["vector"] == 0


def test_rvv_count_objdump_failure(tmp_path: Path) -> None:
    fake = tmp_path / "objdump"
    fake.write_text("#!/bin/sh\nexit 1\n")
    os.chmod(fake, 0o755)
    with pytest.raises(SystemExit, match="failed"):
        rvv_count.count("x.so", str(fake))


def _res(gflops: float, err: float = 1e-7, core: str | None = None, ok: bool | None = None
         ) -> dict[str, object]:
    r: dict[str, object] = {
        "results": {"sgemm": {"64": {"gflops": gflops}}, "dgemm": {"64": {"gflops": gflops}}},
        "errors": {"sgemm_64": err, "dgemm_64": err / 1e6},
        "corename": core,
    }
    if ok is not None:
        r["kernel_ok"] = ok
    return r


def test_summary_speedup_and_checks() -> None:
    report = {"models": {"rv64": {
        "qemu_cpu": "rv64", "expected_core": "RISCV64_GENERIC",
        "ours": _res(1.0, core="riscv64_generic", ok=True),
        "debian-reference": _res(0.4),
    }}}
    gemm_bench._summarise(report, [64])
    s = report["summary"]
    assert s["speedup_vs_reference"]["rv64/ours"]["sgemm_64"] == 2.5
    assert s["numerics_ok"] and s["ours_kernels_ok"]
    gemm_bench.check(report)


def test_check_fails_on_wrong_kernel_or_numbers() -> None:
    wrong_kernel = {"models": {"rvv128": {"ours": _res(1.0, core="riscv64_generic", ok=False)}}}
    gemm_bench._summarise(wrong_kernel, [64])
    with pytest.raises(ValidationError, match="wrong kernel set on rvv128/ours"):
        gemm_bench.check(wrong_kernel)
    wrong_numbers = {"models": {"rv64": {"ours": _res(1.0, err=1e-2, ok=True)}}}
    gemm_bench._summarise(wrong_numbers, [64])
    with pytest.raises(ValidationError, match="differ from numpy"):
        gemm_bench.check(wrong_numbers)
