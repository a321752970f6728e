"""ATen's RVV Vectorized<float>/<double> (the aten-rvv optional patch group) without a torch build.

The vectorization test of tests/aten_rvv/ is cross-compiled in the toolchain image against the
headers of the real PyTorch source with the default series and the aten-rvv group applied
(generated headers from the tree's own .in templates), and run under qemu-riscv64 on every RVV CPU
model of targets.toml and at VLEN 512 and 1024. It runs every method of both specialisations
through the DEFAULT (generic, scalar) and the RVV capability and compares them.

RVV's vectors are 512 bits (16 floats, 8 doubles; VECTOR_WIDTH 64 under CPU_CAPABILITY_RVV) while
a real DEFAULT build's generic Vectorized has 256 (8 floats). Blend masks, set(count), arange,
flip, interleave2, zero_mask and the reductions depend on the lane count, so the reference object
is the same generic vec_base.h code at the RVV width: a copy of the tree's vec_base.h whose RVV
width branch is taken, found first by that object's compile only (in its own DEFAULT512
namespace). Every operation is compared with it element by element; the lane-wise ones are also
compared with the real DEFAULT capability (8 floats at a time) over the same input arrays.

The rv64 model (no V extension) is not run: the program executes RVV code unconditionally;
choosing a capability at run time is the job of the kernels' dispatch, not of these headers.

A second test breaks one method of the real header on purpose (a copy with operator+ subtracting,
and one whose tail load reads a whole vector) and proves the program reports exactly that method.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rvtorch.engine import Container
from rvtorch.patches import apply_in_place, series_for
from rvtorch.targets import matrix
from rvtorch.torchspec import torch_version
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.integration

FEATURE = "aten-rvv"
PROVIDER = "debian"
TEST_SRC = ROOT / "tests" / "aten_rvv"
RVV_HEADER = "ATen/cpu/vec/vec256/rvv/vec256_rvv_common.h"
TARGET = matrix().target("riscv64")
# Every RVV model of targets.toml, then lengths no board in the matrix has, as QEMU CPUs.
RUNS: list[tuple[str, str]] = [(c.name, c.qemu_cpu) for c in TARGET.cpu if c.vector] + [
    (f"vlen{v}", f"rv64,v=true,vext_spec=v1.0,vlen={v}") for v in (512, 1024)
]


def _vlen(qemu_cpu: str) -> int:
    m = re.search(r"vlen=(\d+)", qemu_cpu)
    assert m, f"{qemu_cpu}: no vlen= (QEMU's default VLEN is 128)"
    return int(m.group(1))


@pytest.fixture(scope="module")
def rvv_tree(itest_cache: Path, env: dict[str, str]) -> Path:
    """The real source with the default series and the aten-rvv group, made once per digest."""
    series = series_for(torch_version())
    digest = series.digest(PROVIDER, [FEATURE])
    tree = itest_cache / f"aten-rvv-tree-{digest[:16]}"
    if (tree / ".rvtorch-prepared").exists():
        return tree
    tmp = itest_cache / f".{tree.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    r = run_cli("source", "unpack", "--source", PROVIDER, str(tmp), env=env)
    assert r.returncode == 0, r.stderr
    apply_in_place(series.for_provider(PROVIDER, [FEATURE]), tmp)
    (tmp / ".rvtorch-prepared").write_text(digest + "\n")
    shutil.rmtree(tree, ignore_errors=True)
    tmp.rename(tree)
    return tree


# vec_base.h's branch that gives CPU_CAPABILITY_RVV its width (the aten-rvv patch 0001).
RVV_WIDTH_BRANCH = "#elif defined(CPU_CAPABILITY_RVV) // CPU_CAPABILITY_AVX512"


def _reference_width_overlay(tree: Path, work: Path) -> Path:
    """A copy of the tree's vec_base.h that takes the RVV width branch for the DEFAULT object:
    the generic Vectorized<T>, unchanged, with the lane count of the RVV specialisations."""
    overlay = work / "reference-width"
    header = overlay / "ATen/cpu/vec/vec_base.h"
    header.parent.mkdir(parents=True, exist_ok=True)
    text = (tree / "aten/src/ATen/cpu/vec/vec_base.h").read_text()
    assert text.count(RVV_WIDTH_BRANCH) == 1, "vec_base.h has no RVV width branch"
    header.write_text(text.replace(RVV_WIDTH_BRANCH, "#elif 1 // the test's reference width"))
    return overlay


@dataclass
class Built:
    work: Path
    compile_s: float


class Toolchain:
    """Compiles and runs the test in one toolchain-image container (for the module)."""

    def __init__(self, ctr: Container, tree: Path, work: Path) -> None:
        self.ctr = ctr
        self.tree = tree
        self.work = work

    def call(self, cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return self.ctr.call(cmd, capture=True, check=False, timeout=timeout)

    def build(self, name: str, overlay: Path | None = None, base: str | None = None) -> Built:
        """The generated headers, the three capability objects (DEFAULT, the generic code at the
        RVV width, RVV) and the driver, linked with SLEEF. With ``overlay``, only the RVV object
        is compiled again (headers of the overlay first) and linked with the reference objects
        and driver of build ``base``."""
        out = f"/work/{name}"
        ref = f"/work/{base}" if base else out
        gcc = matrix().project.gcc
        cxx = f"{TARGET.triple}-g++-{gcc}"
        flags = f"-std=c++17 -O2 -mabi={TARGET.mabi} -Wall -Wno-unknown-pragmas"
        inc = f"-I{ref}/gen -I/src -I/src/aten/src -I/test"
        rvv_inc = (f"-I/work/{overlay.relative_to(self.work)} " if overlay else "") + inc
        rvv = (f"{cxx} {flags} -march={TARGET.march}v {rvv_inc} -DVEC_TEST_NS=ops_rvv "
               f"-DCPU_CAPABILITY=RVV -DCPU_CAPABILITY_RVV -c /test/vec_ops.cpp -o {out}/ops_rvv.o")
        if base:
            compile_all = rvv
        else:
            ref_width = _reference_width_overlay(self.tree, self.work)
            # Its own capability namespace (DEFAULT512): its Vectorized<T> has another layout
            # than DEFAULT's, and both are linked into one program.
            ref512 = (f"{cxx} {flags} -march={TARGET.march} "
                      f"-I/work/{ref_width.relative_to(self.work)} {inc} "
                      f"-DVEC_TEST_NS=ops_ref512 -DCPU_CAPABILITY=DEFAULT512 "
                      f"-c /test/vec_ops.cpp -o {out}/ops_ref512.o")
            compile_all = f"""cmake -DSRC=/src -DOUT={out}/gen -P /test/generate_headers.cmake
{cxx} {flags} -march={TARGET.march} {inc} -DVEC_TEST_NS=ops_default -DCPU_CAPABILITY=DEFAULT \
  -c /test/vec_ops.cpp -o {out}/ops_default.o &
{rvv} &
{ref512}
{cxx} {flags} -march={TARGET.march} -I/test -c /test/vec_rvv_test.cpp -o {out}/driver.o
wait %1
wait %2"""
        script = f"""set -e
mkdir -p {out}
{compile_all}
{cxx} -march={TARGET.march} -mabi={TARGET.mabi} {ref}/driver.o {ref}/ops_default.o \
  {ref}/ops_ref512.o {out}/ops_rvv.o -lsleef -lm -o {out}/vec_rvv_test
"""
        start = time.monotonic()
        r = self.call(["bash", "-c", script])
        took = time.monotonic() - start
        assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
        sys.stderr.write(f"aten-rvv: {name}: compiled and linked in {took:.1f} s\n")
        return Built(self.work / name, took)

    def run(self, name: str, qemu_cpu: str) -> tuple[subprocess.CompletedProcess[str], float]:
        start = time.monotonic()
        r = self.call([TARGET.qemu_binary, "-cpu", qemu_cpu, f"/work/{name}/vec_rvv_test"],
                      timeout=600)
        took = time.monotonic() - start
        sys.stderr.write(f"aten-rvv: {name} on -cpu {qemu_cpu}: exit {r.returncode} in "
                         f"{took:.1f} s\n")
        return r, took


@pytest.fixture(scope="module")
def toolchain(rvv_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toolchain]:
    from rvtorch.engine import detect_engine
    from rvtorch.image import ensure_image

    work = tmp_path_factory.mktemp("aten-rvv")
    engine = detect_engine()
    mounts = {str(rvv_tree): "/src", str(TEST_SRC): "/test", str(work): "/work"}
    with engine.container(ensure_image(TARGET.arch), mounts=mounts) as ctr:
        yield Toolchain(ctr, rvv_tree, work)


@pytest.fixture(scope="module")
def good(toolchain: Toolchain) -> Built:
    return toolchain.build("good")


def _summary(stdout: str) -> dict[str, int]:
    m = re.search(r"^aten-rvv-vec-test: vlen=(\d+) ops=(\d+) checks=(\d+) failures=(\d+)$",
                  stdout, re.M)
    assert m, stdout[-3000:]
    return dict(zip(("vlen", "ops", "checks", "failures"), map(int, m.groups()), strict=True))


# The operations the driver compares with the generic code at the RVV width only (their result
# depends on the lane count): vec_rvv_test.cpp's kWholeVector.
WHOLE_VECTOR_OPS = ("ctor_broadcast", "blend", "set", "arange", "interleave2", "deinterleave2",
                    "flip", "gather", "element_access", "zero_mask", "has_inf_nan",
                    "vec_reduce_sum", "vec_reduce_max")


def _ops() -> list[str]:
    """The operation names of the test's table (tests/aten_rvv/vec_ops.cpp)."""
    return re.findall(r"^\s+X\((\w+), \d", (TEST_SRC / "vec_ops.cpp").read_text(), re.M)


@pytest.mark.parametrize(("name", "qemu_cpu"), RUNS, ids=[n for n, _ in RUNS])
def test_rvv_vectorized_matches_default(toolchain: Toolchain, good: Built, name: str,
                                        qemu_cpu: str) -> None:
    r, _ = toolchain.run("good", qemu_cpu)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    s = _summary(r.stdout)
    assert s["vlen"] == _vlen(qemu_cpu), "QEMU did not run at the requested VLEN"
    assert s["failures"] == 0 and s["ops"] == len(_ops()) and s["checks"] > 1_000_000
    # The lane-wise operations of both types were also compared with the real DEFAULT
    # capability (256-bit generic vectors) over the same arrays.
    m = re.search(r"^aten-rvv-vec-test: default-lanes=8/4 lane-wise-ops=(\d+)$", r.stdout, re.M)
    assert m and int(m.group(1)) == 2 * (len(_ops()) - len(WHOLE_VECTOR_OPS)), r.stdout[-2000:]
    for t in ("float", "double"):
        for op in _ops():
            assert f"ok {t} {op}\n" in r.stdout, (t, op)
        assert f"ok {t} loadu/store with count, convert, reduce_all" in r.stdout


# The generic Vectorized<T> methods that the test's table covers under another name, and the
# ones that do not exist for float/double (nor in the AVX2 specialisations the RVV ones mirror).
_COVERED_AS = {
    "loadu": "loadu_store", "store": "loadu_store", "operator==": "cmp_eq",
    "operator!=": "cmp_ne", "operator<": "cmp_lt", "operator<=": "cmp_le",
    "operator>": "cmp_gt", "operator>=": "cmp_ge",
}
_NOT_FOR_FLOAT = {
    "sgn": "complex types only",
    "loadu_one_fourth": "byte types only",
    "as_bytes": "generic storage accessor; the x86 float/double specialisations have none",
    "binary_pred": "private helper", "binary_pred_bool": "private helper",
}


def test_the_table_covers_every_generic_method(rvv_tree: Path) -> None:
    """Every member of vec_base.h's generic Vectorized<T> is an operation of the test, so a
    method added upstream (or dropped from the table) fails here."""
    text = (rvv_tree / "aten/src/ATen/cpu/vec/vec_base.h").read_text()
    body = text[text.index("struct Vectorized {"):text.index("template <class T> Vectorized<T> "
                                                              "inline operator+")]
    methods = set(re.findall(r"Vectorized<T>\s+(?:__attribute__\s*\(\(.*?\)\)\s*)?"
                             r"(operator\s*[=!<>]=?|\w+)\s*\(", body))
    methods |= set(re.findall(r"^\s+(?:int|bool|void)\s+(\w+)\(", body, re.M))
    methods = {re.sub(r"\s+", "", m) for m in methods}
    assert {"blendv", "arange", "zero_mask", "igammac", "operator!="} <= methods
    ops = set(_ops())
    missing = sorted(m for m in methods
                     if m not in _NOT_FOR_FLOAT and _COVERED_AS.get(m, m) not in ops)
    assert not missing, f"methods of the generic Vectorized<T> the test does not run: {missing}"


def _broken_overlay(tree: Path, work: Path, name: str, old: str, new: str) -> Path:
    """A copy of the real RVV header with one line changed, found before the tree's."""
    overlay = work / f"overlay-{name}"
    header = overlay / RVV_HEADER
    header.parent.mkdir(parents=True, exist_ok=True)
    text = (tree / "aten/src" / RVV_HEADER).read_text()
    assert text.count(old) == 1, old
    header.write_text(text.replace(old, new))
    return overlay


BREAKS = {
    # operator+ subtracts.
    "add": ("return V(__riscv_vfadd(a.reg(), b.reg(), n));",
            "return V(__riscv_vfsub(a.reg(), b.reg(), n));"),
    # loadu(ptr, count) reads a whole vector instead of count elements.
    "tail": ("return V(Tr::load_tu(Tr::dup(T(0)), p, k));", "return V(Tr::load(p));"),
}


@pytest.mark.parametrize("broken", sorted(BREAKS))
def test_a_broken_method_is_caught(toolchain: Toolchain, good: Built, broken: str) -> None:
    old, new = BREAKS[broken]
    overlay = _broken_overlay(toolchain.tree, toolchain.work, broken, old, new)
    toolchain.build(f"broken-{broken}", overlay, base="good")
    cpu = next(c for c in TARGET.cpu if c.vector)
    r, _ = toolchain.run(f"broken-{broken}", cpu.qemu_cpu)
    assert r.returncode == 1, (r.stdout + r.stderr)[-3000:]
    out = r.stdout + r.stderr
    if broken == "add":
        assert re.search(r"^FAIL float add: \d+ of \d+ checks differ$", out, re.M), out[-3000:]
        assert re.search(r"^FAIL double add: \d+ of \d+ checks differ$", out, re.M)
        # Only what uses operator+ fails; the rest of the table still agrees.
        failed = set(re.findall(r"^FAIL (?:float|double) (\w+): ", out, re.M))
        assert failed <= {"add", "add_assign", "vec_reduce_sum"}, failed
        assert "ok float sub\n" in out and "ok double mul\n" in out
        assert _summary(r.stdout)["failures"] > 0
    else:
        # The read past `count` hits the guard page after the data.
        assert "FAIL loadu(ptr, count): signal 11" in out, out[-3000:]
