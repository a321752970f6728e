"""The counting QEMU (rvtorch.tcg_count): built from Debian's pinned qemu source with plugins,
our plugin compiled against its header, and both run on a guest program whose executed
instructions are known exactly (tests/tcg/insn_probe.S, assembled in the toolchain image).

Cost: the first run builds qemu-riscv64 (linux-user, one target) in the test cache: unpack,
configure and about 350 ninja steps, a few minutes on 2 idle cores; later runs reuse it. The
probe is assembled in one container; each QEMU run takes well under a second.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rvtorch import tcg_count
from rvtorch.targets import matrix
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

TARGET = matrix().target("riscv64")
CPUS = {c.name: c for c in TARGET.cpu}
# tests/tcg/insn_probe.S: (instructions, vector instructions) between its markers.
REGIONS = {(1, 2): (2003, 0), (2, 3): (3505, 0), (3, 4): (2407, 1801)}


@pytest.fixture(scope="module")
def counting(itest_cache: Path) -> Iterator[tcg_count.CountingQemu]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RVTORCH_CACHE", str(itest_cache))
        t0 = time.monotonic()
        c = tcg_count.ensure()
        sys.stderr.write(f"counting QEMU ready in {time.monotonic() - t0:.0f} s: {c.version}; "
                         f"build record {c.build}\n")
        yield c


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rvtorch.engine import detect_engine
    from rvtorch.image import ensure_image

    work = tmp_path_factory.mktemp("insn-probe")
    (work / "insn_probe.S").write_bytes((ROOT / "tests/tcg/insn_probe.S").read_bytes())
    engine = detect_engine()
    image = ensure_image("riscv64", engine=engine)
    cc = f"{TARGET.triple}-gcc-{matrix().project.gcc}"
    with engine.container(image, mounts={str(work): "/work"}) as ctr:
        r = ctr.call([cc, "-nostdlib", "-static", "-march=rv64gcv", f"-mabi={TARGET.mabi}",
                      "-Wl,--no-relax", "/work/insn_probe.S", "-o", "/work/insn_probe"],
                     capture=True, check=False, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return work / "insn_probe"


def _run(counting: tcg_count.CountingQemu, probe: Path, cpu: str, out: Path
         ) -> tcg_count.Trace:
    r = subprocess.run([*counting.command(out), "-cpu", CPUS[cpu].qemu_cpu, str(probe)],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr  # the marker syscall's ENOSYS does not stop the guest
    return tcg_count.parse_output(out.read_text())


@pytest.mark.parametrize("cpu", [c.name for c in TARGET.cpu if c.vector])
def test_counts_are_exact(counting: tcg_count.CountingQemu, probe: Path, cpu: str,
                          tmp_path: Path) -> None:
    trace = _run(counting, probe, cpu, tmp_path / "trace.txt")
    assert [m.tag for m in trace.marks] == [1, 2, 3, 4]
    for (a, b), (insns, vector) in REGIONS.items():
        r = tcg_count.region(trace, a, b)
        assert (r.insns, r.vector) == (insns, vector), (cpu, a, b)
    # Scalar FP loads/stores (flw/fsw/fld/fsd) count as scalar, every vector width as vector.
    assert trace.mark(3).vector == 0
    # Before marker 1: li a7 (lui+addiw), li a0, ecall; after marker 4: li a7, li a0, ecall.
    assert trace.mark(1).insns == 4
    assert trace.exit == (trace.mark(4).insns + 3, 1801)
    assert all(m.vcpu == 0 and m.vcpu_insns == m.insns for m in trace.marks)


def test_plugin_arguments_are_checked(counting: tcg_count.CountingQemu, probe: Path,
                                      tmp_path: Path) -> None:
    r = subprocess.run([str(counting.qemu), "-plugin", f"{counting.plugin},colour=blue",
                        str(probe)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode != 0
    assert "insn_count: unknown argument colour=blue" in r.stderr
    r = subprocess.run([str(counting.qemu), "-plugin", str(counting.plugin), str(probe)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode != 0 and "insn_count: out=FILE is required" in r.stderr


def test_another_marker_number(counting: tcg_count.CountingQemu, probe: Path,
                               tmp_path: Path) -> None:
    """With nr= set to another number the probe's markers are ordinary syscalls: no marks."""
    out = tmp_path / "trace.txt"
    r = subprocess.run([*counting.command(out, nr=0x5257), "-cpu", CPUS["rvv128"].qemu_cpu,
                        str(probe)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    trace = tcg_count.parse_output(out.read_text())
    assert trace.nr == 0x5257 and trace.marks == ()
    assert trace.exit == (2003 + 3505 + 2407 + 4 + 3, 1801)
