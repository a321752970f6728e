"""Recipes built for real: cross-compiled in the toolchain image, test_package run under QEMU.

Cost (2 cores, cold Conan cache): OpenBLAS riscv64 DYNAMIC_ARCH (3 kernel sets) from Debian's
+ds source, plus OpenBLAS ARMV8 (one kernel set) — see docs/recipes.md for measured times. The
toolchain images come from `rvtorch.image.ensure_image` (built once, reused).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from rvtorch import conan, deps
from rvtorch.targets import matrix, target
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def _kernel_lines(text: str) -> dict[str, tuple[str, str]]:
    """``cpu NAME: kernel CORE (expected EXPECTED)`` lines the openblas test_package prints."""
    found = {}
    for m in re.finditer(r"cpu (\S+): kernel (\S+) \(expected (\S+)\)", text):
        found[m.group(1)] = (m.group(2), m.group(3))
    return found


def test_debian_source_fetched_and_pinned() -> None:
    r = run_cli("deps", "fetch", "--only", "openblas")
    assert r.returncode == 0, r.stderr[-2000:]
    src = conan.source_of("openblas", deps.OPENBLAS_VERSION)
    from rvtorch.sources import sha256_file

    assert sha256_file(conan.cached_source(src)) == src.sha256


def test_openblas_riscv64_dynamic_arch_under_qemu(tmp_path: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    """All three kernel sets built; each CPU model of targets.toml gets its own under QEMU.

    The same package `rvtorch deps build --arch riscv64` makes (reused from the Conan cache when
    that ran first), deployed to a temp dir. (DYNAMIC_ARCH needs every precision in 0.3.34, so
    there is no cheaper variant of it.)
    """
    t = target("riscv64")
    meta = deps.build("riscv64", only=["openblas"], deploy_root=tmp_path)
    out = capfd.readouterr()
    text = out.out + out.err
    kernels = _kernel_lines(text)
    assert set(kernels) == set(t.cpu_names), text[-4000:]
    # LAPACK: OpenBLAS's own routines + the reference ones from liblapack_pic.a, on every model.
    assert text.count("lapack dgesv 7x7 info 0") == len(t.cpu), text[-4000:]
    assert text.count("lapack dsyev 7x7 info 0") == len(t.cpu), text[-4000:]
    for c in t.cpu:
        got, expected = kernels[c.name]
        assert expected == c.openblas_core
        assert got.lower() == c.openblas_core.lower()
    prefix = tmp_path / "openblas"
    assert meta["openblas"]["prefix"] == str(prefix)
    assert (prefix / "include" / "cblas.h").is_file()  # FindOpenBLAS looks right there
    assert (prefix / "lib" / "libopenblas.so.0").exists()
    # The package exports LAPACK (reference routines beside OpenBLAS's own) and needs the
    # Fortran runtime those were compiled for.
    with (prefix / "lib" / "libopenblas.so.0").open("rb") as fh:
        elf = ELFFile(fh)
        dynsym = elf.get_section_by_name(".dynsym")
        defined = {s.name for s in dynsym.iter_symbols() if s["st_shndx"] != "SHN_UNDEF"}
        needed = {t.needed for sec in elf.iter_sections() if isinstance(sec, DynamicSection)
                  for t in sec.iter_tags() if t.entry.d_tag == "DT_NEEDED"}
    assert {"dgesv_", "dgetrf_", "dsyev_", "cheev_", "cgesdd_"} <= defined
    assert "libgfortran.so.5" in needed
    env = (tmp_path / "deps.env").read_text()
    assert f"OpenBLAS_HOME={prefix}" in env and "BLAS=OpenBLAS" in env


def test_openblas_armv8_builds_and_runs(capfd: pytest.CaptureFixture[str]) -> None:
    """Cheap ARM check: one kernel set (TARGET=ARMV8, real types, no LAPACK), run on every
    aarch64 model."""
    t = target("aarch64")
    deps.build("aarch64", only=["openblas"], deploy=False, static_target="ARMV8",
               build_lapack=False, extra_options={"precisions": "sd"})
    out = capfd.readouterr()
    kernels = _kernel_lines(out.out + out.err)
    assert set(kernels) == set(t.cpu_names)
    assert all(got.lower() == "armv8" for got, _ in kernels.values()), kernels


@pytest.fixture(scope="module")
def fastflow_source() -> None:
    """FastFlow's pinned archive in the download cache (from $RVTORCH_SOURCE_MIRROR, which
    scripts/test.sh points at ../shared/sources when it exists), or a skip that says how."""
    from rvtorch import fastflow_fl

    reason = fastflow_fl.fastflow_missing()
    if reason:
        pytest.skip(reason + " (GitHub is not reachable here; FastFlow is in neither Debian "
                    "nor PyPI)")


@pytest.mark.parametrize("arch", [t.arch for t in matrix().targets])
def test_fastflow_create_on_the_pinned_source(arch: str, fastflow_source: None,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    """conan create from the real archive; the test_package (pipeline, farm, a2a with feedback)
    runs under QEMU on every CPU model of the target (rv64 and the RVV models on riscv64)."""
    deps.build(arch, only=["fastflow"], deploy=False)
    text = "".join(capfd.readouterr())
    assert conan.have_source(conan.source_of("fastflow", deps.FASTFLOW_VERSION))  # verified
    for c in target(arch).cpu:
        assert f"cpu {c.name}:" in text, text[-3000:]
    assert text.count("fastflow test_package: OK") >= len(target(arch).cpu)


def test_fastflow_create_natively(fastflow_source: None,
                                  capfd: pytest.CaptureFixture[str]) -> None:
    """The same recipe and test_package for the build machine itself (x86_64)."""
    deps.create_native("fastflow")
    text = "".join(capfd.readouterr())
    assert "fastflow test_package: OK" in text, text[-3000:]


def test_libtorch_from_debian_sysroot() -> None:
    """libtorch packaged from Debian's libtorch-dev:riscv64; test_package matmul under QEMU."""
    deps.build("riscv64", only=["libtorch"], deploy=False, torch_from="debian")
