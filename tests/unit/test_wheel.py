"""check_wheel on fabricated wheels (no network, no containers).

Offline the only real ELF files at hand are the build machine's own, so these tests plant host
ELFs (the C library this very process loaded) where a riscv64 wheel must not have them; the
same checks on real riscv64/aarch64 ELF files run in tests/integration/test_wheel_debs.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from rvtorch.errors import BuildError, UsageError
from rvtorch.targets import matrix, target
from rvtorch.wheel import (
    CheckReport,
    ElfInfo,
    check_wheel,
    expected_soabi,
    is_unwanted,
    patchelf_tool,
    repair_wheel,
    wheel_arch_suffix,
)
from rvtorch.wheelcheck import BuildPathScanner, _check_elf, _elf_info, _rpath_ok
from tests.conftest import run_cli
from tests.wheelkit import make_wheel, rewrite_wheel

RV = target("riscv64")


def host_libc() -> Path:
    """A real ELF of the build machine: the libc this process has mapped."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if "/libc.so" in path or "/libc-" in path:
            return Path(path).resolve()
    pytest.skip("no glibc mapped in this process")


def checks(report) -> set[str]:
    return {f.check for f in report.findings}


@pytest.fixture
def pure_wheel(tmp_path: Path) -> Path:
    """A torch-named riscv64 wheel without ELF files: fails only because _C is missing."""
    return make_wheel(tmp_path, {"torch/__init__.py": "from torch._C import *\n"})


def test_soabi_and_platform_come_from_targets_toml() -> None:
    for t in matrix().targets:
        assert expected_soabi(t) == f"cpython-313-{t.triple}"
        assert t.wheel_platform.endswith("_" + wheel_arch_suffix(t))
    assert expected_soabi(RV) == "cpython-313-riscv64-linux-gnu"


def test_wheel_without_c_extension_is_caught(pure_wheel: Path) -> None:
    report = check_wheel(pure_wheel, "riscv64")
    assert not report.ok
    assert checks(report) == {"soabi"}
    assert report.name == "torch" and report.version == "2.6.0+riscv64"
    assert report.size_bytes == pure_wheel.stat().st_size > 0


def test_host_arch_extension_is_caught(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, {
        "torch/__init__.py": "",
        f"torch/_C.{expected_soabi(RV)}.so": host_libc(),
    })
    report = check_wheel(wheel, "riscv64")
    machine = [f for f in report.findings if f.check == "machine"]
    assert machine and "build machine" in machine[0].message
    assert "EM_X86_64" in machine[0].message or "EM_AARCH64" in machine[0].message


def test_planted_host_library_is_caught(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, {"torch/lib/libhelper.so": host_libc()})
    report = check_wheel(wheel, "riscv64")
    assert any(f.check == "machine" and f.member == "torch/lib/libhelper.so"
               for f in report.findings)


def test_wrong_soabi_is_caught(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, {"torch/_C.cpython-311-x86_64-linux-gnu.so": host_libc()})
    report = check_wheel(wheel, "riscv64")
    soabi = [f for f in report.findings if f.check == "soabi"]
    assert any("cpython-311-x86_64-linux-gnu" in f.message for f in soabi)


def test_absolute_rpath_is_caught(tmp_path: Path) -> None:
    lib = tmp_path / "libfoo.so"
    shutil.copy(host_libc(), lib)
    subprocess.run([patchelf_tool(), "--set-rpath", "/opt/build/lib:$ORIGIN", str(lib)], check=True)
    wheel = make_wheel(tmp_path / "w", {"torch/lib/libfoo.so": lib})
    report = check_wheel(wheel, "riscv64")
    rpath = [f for f in report.findings if f.check == "rpath"]
    assert len(rpath) == 1 and "/opt/build/lib" in rpath[0].message


@pytest.mark.parametrize(("entry", "ok"), [
    ("$ORIGIN", True),
    ("$ORIGIN/../torch.libs", True),
    ("${ORIGIN}/lib", True),
    ("$ORIGIN/../../..", False),
    ("/usr/lib/riscv64-linux-gnu", False),
    ("lib", False),
])
def test_rpath_rules(entry: str, ok: bool) -> None:
    assert (_rpath_ok("torch/lib/libtorch_cpu.so", entry) is None) is ok


def test_riscv_float_abi_must_match_mabi() -> None:
    report_ok = CheckReport(wheel="w", arch="riscv64")
    good = ElfInfo(member="a.so", machine="EM_RISCV", elf_class=64, flags=0x5, kind="so")
    _check_elf(good, RV, "EM_X86_64", report_ok)
    assert report_ok.ok
    soft = ElfInfo(member="b.so", machine="EM_RISCV", elf_class=64, flags=0x1, kind="so")
    _check_elf(soft, RV, "EM_X86_64", report_ok)
    assert [f.check for f in report_ok.findings] == ["float-abi"]
    assert "lp64d" in report_ok.findings[0].message


@pytest.mark.parametrize(("member", "unwanted"), [
    ("torch/bin/protoc", True),
    ("torch/bin/protoc-3.21.12.0", True),
    ("torch/bin/torch_shm_manager", False),
    ("torch/testing/_internal/common_utils.py", False),
])
def test_protoc_by_name(member: str, unwanted: bool) -> None:
    assert bool(is_unwanted(member, None)) is unwanted


def test_test_binaries_and_stray_executables() -> None:
    exe = ElfInfo(member="", machine="EM_RISCV", elf_class=64, flags=5, kind="executable")
    lib = ElfInfo(member="", machine="EM_RISCV", elf_class=64, flags=5, kind="shared object")
    assert is_unwanted("torch/bin/c10_intrusive_ptr_test", exe)
    assert is_unwanted("torch/bin/test_api", exe)
    assert is_unwanted("torch/bin/mkrename", exe)
    assert is_unwanted("torch/lib/libbackend_with_compiler_test.so", lib)
    assert not is_unwanted("torch/bin/torch_shm_manager", exe)
    assert not is_unwanted("torch/lib/libtorch_cpu.so", lib)


def test_name_version_and_tags(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, {"torch/__init__.py": ""}, name="pytorch_riscv64",
                       version="2.3.0a1", tag="cp311-none-any")
    report = check_wheel(wheel, "riscv64")
    assert {"name", "version", "tag"} <= checks(report)


def test_platform_of_another_target_is_caught(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, {"torch/__init__.py": ""}, version="2.6.0+aarch64",
                       tag="cp313-cp313-manylinux_2_39_aarch64")
    assert "tag" in checks(check_wheel(wheel, "riscv64"))
    # Without --arch, the platform tag decides the target.
    assert check_wheel(wheel).arch == "aarch64"


def test_record_must_match(pure_wheel: Path, tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    tampered = rewrite_wheel(pure_wheel, {"torch/__init__.py": "import os\n"},
                             tmp_path / "t" / pure_wheel.name, keep_record=True)
    report = check_wheel(tampered, "riscv64")
    assert any(f.check == "record" and f.member == "torch/__init__.py" for f in report.findings)


def test_metadata_must_agree_with_file_name(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, {
        "torch/__init__.py": "",
        "torch-2.6.0+riscv64.dist-info/METADATA":
            "Metadata-Version: 2.1\nName: torch\nVersion: 2.6.0\n",
    })
    report = check_wheel(wheel, "riscv64")
    assert any(f.check == "metadata" and "Version" in f.message for f in report.findings)


def test_build_paths_in_text_files(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, {
        "torch/__init__.py": "",
        "torch/share/cmake/Torch/TorchConfig.cmake": 'set(TORCH_ROOT "/srv/b/torch-build")\n',
        "torch/_dirs.py": "SRC = '/usr/src/pytorch'\n",
    })
    report = check_wheel(wheel, "riscv64", build_paths=["/srv/b/torch-build"])
    flagged = {f.member for f in report.findings if f.check == "build-path"}
    assert flagged == {"torch/share/cmake/Torch/TorchConfig.cmake", "torch/_dirs.py"}


def test_not_a_zip(tmp_path: Path) -> None:
    bogus = tmp_path / "torch-2.6.0+riscv64-cp313-cp313-linux_riscv64.whl"
    bogus.write_bytes(b"not a zip")
    report = check_wheel(bogus, "riscv64")
    assert checks(report) == {"zip"}


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        check_wheel(tmp_path / "nope.whl", "riscv64")


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, {"torch/lib/libhelper.so": host_libc()})
    proc = run_cli("check-wheel", str(wheel), "--json")
    assert proc.returncode == 4, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["arch"] == "riscv64"
    assert any(f["check"] == "machine" for f in report["findings"])
    assert proc.stderr.strip().splitlines()[-1].startswith("rvtorch: error: ")
    missing = run_cli("check-wheel", str(tmp_path / "missing.whl"), "--arch", "riscv64")
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1


def test_repair_refuses_wrong_inputs(tmp_path: Path) -> None:
    other = make_wheel(tmp_path, {"x/__init__.py": ""}, name="pytorch_riscv64")
    with pytest.raises(BuildError, match="distribution"):
        repair_wheel(other, "riscv64", tmp_path / "out", lib_path=[], strip="/bin/true")
    done = make_wheel(tmp_path, {"torch/__init__.py": ""},
                      tag="cp313-cp313-manylinux_2_39_riscv64")
    with pytest.raises(BuildError, match="linux_riscv64"):
        repair_wheel(done, "riscv64", tmp_path / "out", lib_path=[], strip="/bin/true")
    assert not list((tmp_path / "out").glob("*.whl"))


def test_runnable_libraries_are_libraries_and_pies_are_executables() -> None:
    """libc.so.6 has an interpreter (it prints its version when run) but is a library; a PIE has
    DF_1_PIE. The first full riscv64 wheel bundled libcap.so.2 (also runnable) and the check had
    called it a stray executable."""
    import sys

    with host_libc().open("rb") as fh:
        info = _elf_info("torch.libs/libc.so.6", fh)
    assert info.kind == "shared object" and info.soname == "libc.so.6"
    with Path(sys.executable).resolve().open("rb") as fh:
        assert _elf_info("bin/python", fh).kind == "executable"


def test_a_prefix_map_flag_is_not_a_leaked_build_path() -> None:
    """torch records its CXX_FLAGS (with -ffile-prefix-map=/rvtorch/src=.) in libtorch_cpu.so;
    that mention is the remedy. Any other mention of the build path is still found."""

    def found(data: bytes, literal: str = "/srv/b") -> set[str]:
        scanner = BuildPathScanner([literal])
        scanner.feed(data)
        scanner.finish()
        return scanner.found

    assert found(b"\0CXX_FLAGS -ffile-prefix-map=/rvtorch/src=. -O2\0") == set()
    assert found(b"\0-fdebug-prefix-map=/srv/b/torch=/opt/torch\0") == set()
    assert found(b"\0-ffile-prefix-map=/rvtorch/src=.\0/rvtorch/src/build/lib:\0") == {
        "/rvtorch/src/build/lib"}
    assert found(b"/rvtorch/src/aten/x.cpp") == {"/rvtorch/src/aten/x.cpp"}
    assert found(b"x\0/srv/b/torch/CMakeLists.txt\0") == {"/srv/b/torch/CMakeLists.txt"}


def test_a_build_path_split_across_blocks_is_found() -> None:
    """Members are scanned in 1 MiB blocks: a path on a boundary is found once, whole."""
    path = b"/home/ci/pytorch/build/aten/src/ATen/ops.cpp"
    for lead in (100, 5000):
        for cut in range(len(path) + 1):
            scanner = BuildPathScanner()
            scanner.feed(b"\0" * lead + path[:cut])
            scanner.feed(path[cut:] + b"\0" + b"x" * 3000)
            scanner.finish()
            assert scanner.found == {path.decode()}, (lead, cut)
