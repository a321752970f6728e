"""The RVV loops for comparisons with a bool output and where() (aten-rvv patch 0004), without a
torch build.

The patch's header (aten/src/ATen/native/cpu/rvv/BoolLoops.h) depends on nothing in ATen, so it
is taken from the patch file itself (`git apply --include`, into an empty directory: exactly the
text a build gets), compiled in the toolchain image with tests/aten_rvv/bool_loops_test.cpp and
run under qemu-riscv64 on every RVV CPU model of targets.toml and at VLEN 512 and 1024 (the runs
of test_aten_rvv.py). The program compares each loop with a scalar reference for every n from 0
to 300, contiguous and broadcast operands, on special values, checks guard bytes after the output
and that unsupported strides are refused untouched.

A second test breaks one line of the real header on purpose and proves the program reports
exactly what that line does.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rvtorch.engine import Container
from rvtorch.targets import matrix
from rvtorch.torchspec import torch_version
from tests.integration.test_aten_rvv import RUNS, TARGET, TEST_SRC, _vlen

pytestmark = pytest.mark.integration

HEADER = "aten/src/ATen/native/cpu/rvv/BoolLoops.h"
TYPES_CMP = ("float", "double")
OPS = ("eq", "ne", "lt", "le", "gt", "ge")
TYPES_WHERE = ("float", "double", "int32", "int64")


def _patch() -> Path:
    found = sorted((torch_version().patch_dir / "aten-rvv").glob("0004-*.patch"))
    assert len(found) == 1, f"expected one aten-rvv 0004 patch, found {found}"
    return found[0]


def _extract_header(dest: Path) -> Path:
    """The header exactly as the patch creates it, alone in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["git", "apply", f"--include={HEADER}", str(_patch())], cwd=dest,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert (dest / HEADER).is_file(), f"{_patch().name} does not create {HEADER}"
    return dest


class Toolchain:
    def __init__(self, ctr: Container, work: Path) -> None:
        self.ctr = ctr
        self.work = work

    def call(self, cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return self.ctr.call(cmd, capture=True, check=False, timeout=timeout)

    def build(self, name: str) -> None:
        """Compile the test against the header of /work/<name>/src (a tree with only it)."""
        cxx = f"{TARGET.triple}-g++-{matrix().project.gcc}"
        out = f"/work/{name}"
        script = (f"{cxx} -std=c++17 -O2 -march={TARGET.march}v -mabi={TARGET.mabi} -Wall "
                  f"-Wextra -Werror -DCPU_CAPABILITY_RVV -I{out}/src/aten/src "
                  f"/test/bool_loops_test.cpp -o {out}/bool_loops_test")
        start = time.monotonic()
        r = self.call(["bash", "-c", script])
        assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
        sys.stderr.write(f"aten-rvv-bool: {name}: compiled in {time.monotonic() - start:.1f} s\n")

    def run(self, name: str, qemu_cpu: str) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        r = self.call([TARGET.qemu_binary, "-cpu", qemu_cpu, f"/work/{name}/bool_loops_test"],
                      timeout=600)
        sys.stderr.write(f"aten-rvv-bool: {name} on -cpu {qemu_cpu}: exit {r.returncode} in "
                         f"{time.monotonic() - start:.1f} s\n")
        return r


@pytest.fixture(scope="module")
def toolchain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toolchain]:
    from rvtorch.engine import detect_engine
    from rvtorch.image import ensure_image

    work = tmp_path_factory.mktemp("aten-rvv-bool")
    mounts = {str(TEST_SRC): "/test", str(work): "/work"}
    with detect_engine().container(ensure_image(TARGET.arch), mounts=mounts) as ctr:
        yield Toolchain(ctr, work)


@pytest.fixture(scope="module")
def good(toolchain: Toolchain) -> str:
    _extract_header(toolchain.work / "good" / "src")
    toolchain.build("good")
    return "good"


def _summary(stdout: str) -> dict[str, int]:
    m = re.search(r"^bool-loops-test: vlen=(\d+) checks=(\d+) failures=(\d+)$", stdout, re.M)
    assert m, stdout[-3000:]
    return dict(zip(("vlen", "checks", "failures"), map(int, m.groups()), strict=True))


def _failed(out: str) -> set[str]:
    return set(re.findall(r"^FAIL (.+?): \d+ of \d+ checks differ$", out, re.M))


@pytest.mark.parametrize(("name", "qemu_cpu"), RUNS, ids=[n for n, _ in RUNS])
def test_rvv_bool_loops_match_scalar(toolchain: Toolchain, good: str, name: str,
                                     qemu_cpu: str) -> None:
    r = toolchain.run(good, qemu_cpu)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    s = _summary(r.stdout)
    assert s["vlen"] == _vlen(qemu_cpu), "QEMU did not run at the requested VLEN"
    assert s["failures"] == 0 and not _failed(r.stdout)
    # Every loop ran: each (type, op) reports its values, guard bytes, strides handled/refused.
    groups = [f"{t} {op}" for t in TYPES_CMP for op in OPS] + [f"{t} where" for t in TYPES_WHERE]
    for g in groups:
        for part in ("", " guard", " handled", " refuse"):
            assert f"ok {g}{part}\n" in r.stdout, f"{g}{part} not reported"
    # 301 lengths x (4 or 8) operand patterns, each n values checked: millions, not a handful.
    assert s["checks"] > 4_000_000, s


BREAKS = {
    # != as an ordered comparison: wrong only where a NaN is compared.
    "ne-ordered": ("return __riscv_vmfne_vv_##SFX##_b8(a, b, vl);",
                   "return __riscv_vmor_mm_b8(__riscv_vmflt_vv_##SFX##_b8(a, b, vl), "
                   "__riscv_vmfgt_vv_##SFX##_b8(a, b, vl), vl);"),
    # The comparison loop accepts a non-contiguous output.
    "strided-out": ("if (strides[0] != 1 || (strides[1]", "if ((strides[1]"),
    # where() reads its condition inverted.
    "where-inverted": ("m = __riscv_vmsne_vx_u8m1_b8(__riscv_vle8_v_u8m1(cond, vl), 0, vl);",
                       "m = __riscv_vmseq_vx_u8m1_b8(__riscv_vle8_v_u8m1(cond, vl), 0, vl);"),
}
EXPECTED = {
    "ne-ordered": {f"{t} ne" for t in TYPES_CMP},
    "strided-out": {f"{t} {op} refuse" for t in TYPES_CMP for op in OPS},
    "where-inverted": {f"{t} where" for t in TYPES_WHERE},
}


@pytest.mark.parametrize("broken", sorted(BREAKS))
def test_a_broken_loop_is_caught(toolchain: Toolchain, good: str, broken: str) -> None:
    old, new = BREAKS[broken]
    src = toolchain.work / f"broken-{broken}" / "src"
    _extract_header(src)
    header = src / HEADER
    text = header.read_text()
    assert text.count(old) == 1, old
    header.write_text(text.replace(old, new))
    toolchain.build(f"broken-{broken}")
    cpu = next(c for c in TARGET.cpu if c.vector)
    r = toolchain.run(f"broken-{broken}", cpu.qemu_cpu)
    assert r.returncode == 1, (r.stdout + r.stderr)[-3000:]
    assert _summary(r.stdout)["failures"] > 0
    # Exactly what the broken line does fails; every other loop still agrees.
    assert _failed(r.stdout) == EXPECTED[broken], r.stdout[-3000:]


def test_the_patch_hooks_both_kernels() -> None:
    """The loops are reached from the kernels, only under the RVV capability."""
    text = _patch().read_text()
    for path in ("aten/src/ATen/native/cpu/BinaryOpsKernel.cpp",
                 "aten/src/ATen/native/cpu/TensorCompareKernel.cpp", HEADER):
        assert f"diff --git a/{path} b/{path}" in text, path
    assert "rvv::compare_loop<scalar_t>" in text and "rvv::where_loop<sizeof(scalar_t)>" in text
    for cmp in ("EQ", "NE", "LT", "LE", "GT", "GE"):
        assert f"rvv::CmpOp::{cmp}," in text, cmp
    assert text.count("+#if defined(CPU_CAPABILITY_RVV)") >= 9


