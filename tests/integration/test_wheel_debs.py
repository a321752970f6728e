"""repair_wheel and check_wheel on real target ELF files (Debian trixie riscv64/arm64 packages).

No toolchain image needed: Debian's python3-zstd is a cp313 extension that links libzstd, which
no manylinux policy provides, so it stands in for torch's _C and libopenblas here. The same
functions run on a really cross-compiled _C in test_wheel_cross.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from rvtorch.errors import BuildError
from rvtorch.targets import Target, matrix
from rvtorch.wheel import (
    check_wheel,
    expected_soabi,
    patchelf_tool,
    repair_wheel,
    wheel_arch_suffix,
)
from tests.conftest import run_cli
from tests.integration.debs import zstd_root
from tests.wheelkit import make_wheel, rewrite_wheel

pytestmark = pytest.mark.integration

ARCHES = matrix().arches


def host_elf() -> Path:
    for line in Path("/proc/self/maps").read_text().splitlines():
        if "/libc.so" in line:
            return Path(line.split()[-1]).resolve()
    pytest.skip("no glibc mapped")


def need_strip(t: Target) -> None:
    if not shutil.which(f"{t.triple}-strip"):
        pytest.skip(f"{t.triple}-strip missing (apt-get install binutils-{t.triple})")


def dynamic(data: bytes) -> dict[str, list[str]]:
    elf = ELFFile(io.BytesIO(data))
    tags: dict[str, list[str]] = {"symtab": [str(elf.get_section_by_name(".symtab") is not None)]}
    for sec in elf.iter_sections():
        if isinstance(sec, DynamicSection):
            for tag in sec.iter_tags():
                if tag.entry.d_tag == "DT_NEEDED":
                    tags.setdefault("needed", []).append(tag.needed)
                elif tag.entry.d_tag in ("DT_RPATH", "DT_RUNPATH"):
                    tags.setdefault("rpath", []).append(getattr(tag, tag.entry.d_tag[3:].lower()))
    return tags


@pytest.fixture(params=ARCHES)
def crossenv_wheel(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Target, Path, Path]:
    """(target, a linux_<arch> torch wheel as a crossenv makes it, the sysroot lib dir)."""
    t = matrix().target(request.param)
    root = zstd_root(t.debian_arch, tmp_path / "root")
    ext = next((root / "usr/lib/python3/dist-packages").glob("zstd.cpython-313-*.so"))
    assert ext.name == f"zstd.{expected_soabi(t)}.so"
    wheel = make_wheel(tmp_path / "in", {
        "torch/__init__.py": "from torch import _C\n",
        f"torch/_C.{expected_soabi(t)}.so": ext,
        "torch/bin/protoc": b"#!/bin/sh\n",
    }, version=f"2.6.0+{t.arch}", tag=f"cp313-cp313-linux_{wheel_arch_suffix(t)}")
    return t, wheel, root / "usr/lib" / t.triple


def test_unrepaired_wheel_fails_for_the_missing_library(crossenv_wheel) -> None:
    t, wheel, _ = crossenv_wheel
    report = check_wheel(wheel, t.arch)
    assert {f.check for f in report.findings} == {"needed", "unwanted"}
    assert any("libzstd.so.1" in f.message for f in report.findings)


def test_repair_bundles_strips_and_retags(crossenv_wheel, tmp_path: Path) -> None:
    t, wheel, libdir = crossenv_wheel
    need_strip(t)
    out = tmp_path / "dist"
    repaired = repair_wheel(wheel, t, out, lib_path=[libdir])
    assert repaired.name == (f"torch-2.6.0+{t.arch}-cp313-cp313-{t.wheel_platform}.whl")
    assert [p.name for p in out.iterdir()] == [repaired.name]  # no temp dirs left behind
    report = check_wheel(repaired, t.arch)
    assert report.ok, report.summary()
    assert [Path(b).name.split("-")[0] for b in report.bundled_libs] == ["libzstd"]
    with zipfile.ZipFile(repaired) as zf:
        names = zf.namelist()
        assert "torch/bin/protoc" not in names
        c_ext = dynamic(zf.read(f"torch/_C.{expected_soabi(t)}.so"))
        lib = dynamic(zf.read(report.bundled_libs[0]))
    assert c_ext["rpath"] == ["$ORIGIN/../torch.libs"]
    assert any(n.startswith("libzstd-") for n in c_ext["needed"])
    assert c_ext["symtab"] == ["False"] and lib["symtab"] == ["False"]


def test_repair_resolves_absolute_links_inside_the_sysroot(crossenv_wheel, tmp_path: Path) -> None:
    """Debian's alternatives (libopenblas.so.0 -> /etc/alternatives/...) are absolute links."""
    t, wheel, libdir = crossenv_wheel
    need_strip(t)
    sysroot = tmp_path / "sysroot"
    real = sysroot / "usr/lib" / t.triple / "impl"
    real.mkdir(parents=True)
    shutil.copy(next(libdir.glob("libzstd.so.1.*")), real / "libzstd.so.1")
    (sysroot / "etc/alternatives").mkdir(parents=True)
    (sysroot / "etc/alternatives/libzstd.so.1").symlink_to(f"/usr/lib/{t.triple}/impl/libzstd.so.1")
    (sysroot / "usr/lib" / t.triple / "libzstd.so.1").symlink_to("/etc/alternatives/libzstd.so.1")
    lib_path = [sysroot / "usr/lib" / t.triple]
    with pytest.raises(BuildError, match=r"libzstd\.so\.1"):
        repair_wheel(wheel, t, tmp_path / "a", lib_path=lib_path)
    assert not list((tmp_path / "a").iterdir())
    repaired = repair_wheel(wheel, t, tmp_path / "b", lib_path=lib_path, sysroot=sysroot)
    assert check_wheel(repaired, t.arch).ok


def test_check_catches_what_was_planted(crossenv_wheel, tmp_path: Path) -> None:
    t, wheel, libdir = crossenv_wheel
    need_strip(t)
    good = repair_wheel(wheel, t, tmp_path / "dist", lib_path=[libdir])
    soabi = expected_soabi(t)

    host = rewrite_wheel(good, {"torch/lib/libshm.so": host_elf()}, tmp_path / "h" / good.name)
    findings = check_wheel(host, t.arch).findings
    assert any(f.check == "machine" and f.member == "torch/lib/libshm.so"
               and "build machine" in f.message for f in findings)
    cli = run_cli("check-wheel", str(host), "--json")
    assert cli.returncode == 4 and json.loads(cli.stdout)["ok"] is False

    lib = tmp_path / "libabs.so"
    shutil.copy(next(libdir.glob("libzstd.so.1.*")), lib)
    subprocess.run([patchelf_tool(), "--set-rpath", f"/usr/lib/{t.triple}", str(lib)], check=True)
    absolute = rewrite_wheel(good, {"torch/lib/libabs.so": lib}, tmp_path / "r" / good.name)
    assert [f.check for f in check_wheel(absolute, t.arch).findings] == ["rpath"]

    with zipfile.ZipFile(good) as zf:
        c_ext = zf.read(f"torch/_C.{soabi}.so")
    wrong = rewrite_wheel(good, {f"torch/_C.{soabi}.so": None,
                                 "torch/_C.cpython-312-x86_64-linux-gnu.so": c_ext},
                          tmp_path / "s" / good.name)
    soabi_findings = [f for f in check_wheel(wrong, t.arch).findings if f.check == "soabi"]
    assert soabi_findings and any("cpython-312" in f.message for f in soabi_findings)

    assert run_cli("check-wheel", str(good)).returncode == 0


def test_other_targets_elves_are_caught(tmp_path: Path) -> None:
    """A riscv64 wheel with an aarch64 library in it (or the other way round)."""
    if len(ARCHES) < 2:
        pytest.skip("one target only")
    a, b = (matrix().target(x) for x in ARCHES[:2])
    ext_b = next(zstd_root(b.debian_arch, tmp_path / "b").rglob("zstd.cpython-313-*.so"))
    wheel = make_wheel(tmp_path / "w", {f"torch/_C.{expected_soabi(a)}.so": ext_b},
                       version=f"2.6.0+{a.arch}", tag=f"cp313-cp313-linux_{wheel_arch_suffix(a)}")
    machine = [f for f in check_wheel(wheel, a.arch).findings if f.check == "machine"]
    assert machine and b.elf_machine in machine[0].message


def test_symbol_versions_newer_than_the_policy_are_caught(crossenv_wheel, tmp_path: Path) -> None:
    """libzstd1 1.5.7 needs glibc >= 2.34: fine for manylinux_2_39, too new for 2_31."""
    t, wheel, libdir = crossenv_wheel
    need_strip(t)
    good = repair_wheel(wheel, t, tmp_path / "dist", lib_path=[libdir])
    assert "symbols" not in {f.check for f in check_wheel(good, t).findings}
    older = dataclasses.replace(t, wheel_platform=f"manylinux_2_31_{wheel_arch_suffix(t)}")
    findings = [f for f in check_wheel(good, older).findings if f.check == "symbols"]
    assert findings and all("GLIBC_2.3" in f.message for f in findings)
    with pytest.raises(BuildError, match="symbol versions"):
        repair_wheel(wheel, older, tmp_path / "old", lib_path=[libdir])
