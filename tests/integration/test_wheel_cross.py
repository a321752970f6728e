"""Repair + check on a really cross-compiled extension (toolchain image, sysroot OpenBLAS)."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from rvtorch.targets import matrix
from rvtorch.wheel import check_wheel, expected_soabi, repair_wheel
from tests.conftest import run_cli
from tests.integration.cross_ext import build_crossenv_wheel
from tests.wheelkit import rewrite_wheel

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("arch", matrix().arches)
def test_cross_built_extension_is_repaired_and_checked(arch: str, tmp_path: Path) -> None:
    t = matrix().target(arch)
    if not shutil.which(f"{t.triple}-strip"):
        pytest.skip(f"apt-get install binutils-{t.triple}")
    wheel = build_crossenv_wheel(t, tmp_path / "build")

    before = check_wheel(wheel, t.arch)
    assert any(f.check == "needed" and "libopenblas.so.0" in f.message for f in before.findings)

    # No lib_path: repair mounts the toolchain image and bundles from its sysroot.
    repaired = repair_wheel(wheel, t, tmp_path / "dist")
    report = check_wheel(repaired, t.arch)
    assert report.ok, report.summary()
    assert repaired.name.endswith(f"-{t.wheel_platform}.whl")
    bundled = [Path(b).name for b in report.bundled_libs]
    # Debian's OpenBLAS file is libopenblasp-r0.3.29.so (the pthread build), with libgfortran.
    assert any(b.startswith("libopenblas") for b in bundled), bundled
    assert any(b.startswith("libgfortran") for b in bundled), bundled
    assert report.extension == f"torch/_C.{expected_soabi(t)}.so"

    # A host-arch library planted into the repaired wheel is caught, and the CLI says exit 4.
    host_lib = next(p for p in (Path("/lib/x86_64-linux-gnu/libz.so.1"),
                                Path("/usr/lib/x86_64-linux-gnu/libz.so.1"),
                                Path("/lib/aarch64-linux-gnu/libz.so.1")) if p.exists())
    planted = rewrite_wheel(repaired, {"torch/lib/libz.so.1": host_lib.resolve()},
                            tmp_path / "planted" / repaired.name)
    proc = run_cli("check-wheel", str(planted))
    assert proc.returncode == 4
    assert "torch/lib/libz.so.1" in proc.stdout and "build machine" in proc.stdout
    with zipfile.ZipFile(repaired) as zf:
        assert not [n for n in zf.namelist() if n.startswith("torch/lib/")]
