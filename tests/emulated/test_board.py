"""The virtual boards: boot, SSH, pip install into a venv, the smoke suite there, bad boards.

One riscv64 board (``rvv128``) is booted for the module and powered off at the end; every test
uses it. The must-show path runs in the default tier: ``board validate --vm --wheel`` pip-installs
the Debian-repaired stand-in torch wheel of the emulated tier (tests/emulated/debian_wheel.py:
Debian's riscv64 torch 2.6.0 packed and repaired by :func:`rvtorch.wheel.repair_wheel`, the
same wheel ``test_wheel_validate.py`` uses) into a fresh venv over SSH, imports torch and runs
the smoke suite there, with the goldens of ``rvtorch validate``. A second, tiny stand-in (a real
riscv64 CPython extension, python3-zstd, inside a ``torch`` package, its libzstd bundled by
repair) goes over the ``--host`` path a real board takes, and the bad boards are refused before
anything is copied. With a wheel of ours (``RVTORCH_BOARD_WHEEL=dist/torch-...whl``, made by
``./scripts/build_torch.sh``) its smoke suite runs there too.

The aarch64 board (``cortex-a53``) gets the same install + smoke with the aarch64 stand-in; its
image and TCG boot make it a slow test (tests/conftest.py SLOW_TESTS).

Cost: ``benchmarks/bench_board.py --test-tier`` runs this module's default selection and writes
each test's time to ``benchmarks/results/board.json`` (``test_tier``); making the board image
once is ``latest.image.image_s`` there (README, Tests).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rvtorch.targets import matrix
from rvtorch.wheel import repair_wheel
from tests.conftest import run_cli
from tests.emulated.debian_wheel import debian_torch_wheel
from tests.integration.debs import zstd_root
from tests.wheelkit import make_wheel

pytestmark = pytest.mark.emulated

T = matrix().target("riscv64")
# torch 2.6.0's own Requires-Dist (its x86-only CUDA/triton entries left out): pip must resolve
# them from the pinned wheelhouse on the board, with --no-index.
TORCH_METADATA = """Metadata-Version: 2.1
Name: torch
Version: 2.6.0+riscv64
Requires-Python: >=3.9.0
Requires-Dist: filelock
Requires-Dist: typing-extensions>=4.10.0
Requires-Dist: setuptools; python_version >= "3.12"
Requires-Dist: sympy==1.13.1; python_version >= "3.9"
Requires-Dist: networkx
Requires-Dist: jinja2
Requires-Dist: fsspec
"""
CPU = "rvv128"
ARM_CPU = "cortex-a53"


def _need_host() -> None:
    if os.geteuid() != 0:
        pytest.skip("making the board image needs root (debootstrap, chroot)")
    for tool in ("ssh", "scp", "mkfs.ext4", f"{T.triple}-strip"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} missing (scripts/lib.sh HOST_PACKAGES)")


def _ok(proc: object) -> str:
    assert getattr(proc, "returncode", None) == 0, getattr(proc, "stderr", "")[-3000:]
    return str(getattr(proc, "stdout", ""))


def _ssh(*cmd: str, arch: str = "riscv64") -> str:
    return _ok(run_cli("board", "ssh", "--arch", arch, "--", *cmd, timeout=900))


def _boot(arch: str, cpu: str) -> Iterator[dict[str, object]]:
    """Boot (or reuse) the board; a board this fixture booted is powered off and its disk
    dropped at the end (the next run starts from the clean image), a reused one is left up."""
    _need_host()
    up = _ok(run_cli("board", "up", "--arch", arch, "--cpu", cpu, "--timeout", "3000",
                     timeout=7200))
    info = json.loads(_ok(run_cli("board", "status", "--arch", arch, "--json")))
    yield info
    if "reused" not in up:
        run_cli("board", "down", "--arch", arch, "--discard", timeout=600)


@pytest.fixture(scope="module")
def board() -> Iterator[dict[str, object]]:
    yield from _boot("riscv64", CPU)


@pytest.fixture(scope="module")
def arm_board() -> Iterator[dict[str, object]]:
    yield from _boot("aarch64", ARM_CPU)


def _smoke_report(report_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(report, the smoke suite's result) of a `board validate` run."""
    report = json.loads((report_dir / "report.json").read_text())
    return report, report["runs"][0]["suites"]["smoke"]["result"]


def _refused(proc: object, code: int, text: str) -> None:
    """A bad input: exit ``code`` and one ``rvtorch: error:`` line that says ``text``."""
    stderr = str(getattr(proc, "stderr", ""))
    errors = [ln for ln in stderr.splitlines() if ln.startswith("rvtorch: error:")]
    assert getattr(proc, "returncode", None) == code and len(errors) == 1, stderr
    assert text in errors[0], stderr


def _check(result: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in result["checks"] if c["name"] == name]
    assert found, f"no {name} check in {[c['name'] for c in result['checks']]}"
    return found[0]


def stand_in_wheel(out: Path, *, tag_python: str = "cp313", fail_import: bool = False) -> Path:
    root = zstd_root(T.debian_arch, out / "root")
    ext = next((root / "usr/lib/python3/dist-packages").glob("zstd.cpython-313-*.so"))
    # torch/_C is the zstd extension (what repair and check-wheel expect); loaded under its
    # own init name, so `import torch` runs the repaired ELF and its bundled libzstd.
    init = ("raise ImportError('broken on purpose')\n" if fail_import else
            "import importlib.util as _u, os as _os\n"
            f"_s = _u.spec_from_file_location('zstd', _os.path.join(_os.path.dirname(__file__), "
            f"'_C.{ext.name.split('.', 1)[1]}'))\n"
            "_C = _u.module_from_spec(_s)\n_s.loader.exec_module(_C)\n"
            "__version__ = '2.6.0+riscv64'\n")
    raw = make_wheel(out / "raw", {"torch/__init__.py": init,
                                   f"torch/_C.{ext.name.split('.', 1)[1]}": ext,
                                   "torch-2.6.0+riscv64.dist-info/METADATA": TORCH_METADATA},
                     version="2.6.0+riscv64", tag=f"{tag_python}-{tag_python}-linux_riscv64")
    if tag_python != "cp313":
        return raw
    return repair_wheel(raw, T, out / "dist", lib_path=[root / "usr/lib" / T.triple])


def _host_args(info: dict[str, object], key: Path | None = None) -> list[str]:
    vm_dir = Path(str(info["dir"]))
    image_key = Path(str(info["ssh"]).split("-i ", 1)[1].split()[0])
    return ["--host", "rvtorch@127.0.0.1", "--port", str(info["port"]),
            "--key", str(key or image_key), "--known-hosts", str(vm_dir / "known_hosts")]


def test_board_boots_with_the_cpu_model_and_python(board: dict[str, object]) -> None:
    assert board["running"] and board["ssh_ok"] and board["cpu"] == CPU
    out = _ssh("sh", "-c", "uname -m; python3 -c 'import sys; print(sys.version_info[:2])'; "
               "grep -m1 '^isa' /proc/cpuinfo")
    machine, pyver, isa = out.strip().splitlines()
    assert machine == "riscv64" and pyver == "(3, 13)"
    assert isa.split(":")[1].strip().startswith("rv64imafdcv"), isa
    # A second `up` with the same settings reuses the running board.
    again = _ok(run_cli("board", "up", "--arch", "riscv64", "--cpu", CPU, timeout=600))
    assert "reused" in again
    other = run_cli("board", "up", "--arch", "riscv64", "--cpu", "rv64", timeout=600)
    assert other.returncode == 2 and "already runs with cpu=rvv128" in other.stderr


def test_torch_wheel_pip_installed_and_smoke_validated_on_the_board(
        board: dict[str, object], tmp_path: Path) -> None:
    """The must-show path: a torch wheel, pip into a venv over SSH, import, smoke suite."""
    wheel = debian_torch_wheel("riscv64")
    report_dir = tmp_path / "report"
    proc = run_cli("board", "validate", "--vm", "--wheel", str(wheel), "--venv", "~/torch-venv",
                   "--suite", "smoke", "--report", str(report_dir), timeout=7200)
    out = _ok(proc)
    assert f"validation passed on the riscv64 virtual board ({CPU})" in out, out
    report, smoke = _smoke_report(report_dir)
    assert report["ok"] and report["runs"][0]["cpu"] == CPU
    install = report["target"]["install"]
    assert install["venv"] == "/home/rvtorch/torch-venv"
    assert install["cpu"]["machine"] == "riscv64"
    assert install["cpu"]["vector"] and install["cpu"]["vlen"] == 128
    assert install["openblas_core"] == "riscv64_zvl128b"
    assert "torch==2.6.0+riscv64" in install["packages"] and any(
        p.startswith("sympy==") for p in install["packages"])
    # The suite imported torch from the venv pip filled, its _C built for the board's Python.
    where = _check(smoke, "torch_location")
    assert where["ok"] and where["value"].startswith("/home/rvtorch/torch-venv/lib/python3.13/")
    assert _check(smoke, "torch_c_extension")["ok"]
    assert str(install["torch"]["version"]).startswith("2.6.0")
    left = _ssh("sh", "-c", "ls -d ~/torch-venv*")
    assert left.split() == ["/home/rvtorch/torch-venv"]  # no .tmp-* venv left beside it


def test_install_over_ssh_like_a_user(board: dict[str, object], tmp_path: Path) -> None:
    wheel = stand_in_wheel(tmp_path)
    proc = run_cli("board", "install", "--wheel", str(wheel), *_host_args(board),
                   "--venv", "~/torch-venv", timeout=3600)
    out = _ok(proc)
    assert "vector extension: yes, VLEN 128" in out, out
    assert "torch 2.6.0+riscv64" in out
    got = _ssh("sh", "-c", "~/torch-venv/bin/python -c 'import torch; print(torch._C.__file__)'"
               " && ~/torch-venv/bin/pip list --format=freeze && ls -d ~/torch-venv*")
    assert "/torch-venv/lib/python3.13/site-packages/torch/_C.cpython-313-riscv64" in got
    assert "sympy==" in got and "torch==2.6.0+riscv64" in got
    assert got.strip().splitlines()[-1].endswith("/torch-venv")  # no .tmp-* left


def test_bad_boards_are_refused_before_copying(board: dict[str, object], tmp_path: Path) -> None:
    good = stand_in_wheel(tmp_path / "good")
    other_key = tmp_path / "other_key"
    assert os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other_key}") == 0
    proc = run_cli("board", "install", "--wheel", str(good), *_host_args(board, other_key))
    _refused(proc, 2, "refused the key")

    arm = make_wheel(tmp_path / "arm", {"torch/__init__.py": ""}, version="2.6.0+aarch64",
                     tag="cp313-cp313-manylinux_2_39_aarch64")
    proc = run_cli("board", "install", "--vm", "--arch", "riscv64", "--wheel", str(arm))
    _refused(proc, 2, "is riscv64, torch-2.6.0+aarch64")

    py312 = stand_in_wheel(tmp_path / "py312", tag_python="cp312")
    proc = run_cli("board", "install", "--vm", "--wheel", str(py312))
    _refused(proc, 2, "no Python 3.12")

    # A full disk: fill it to ~100 MiB free, then the install must refuse up front.
    _ssh("sh", "-c", "avail=$(df -Pk ~ | awk 'NR==2 {print $4}'); "
         "fallocate -l $(( (avail - 100*1024) * 1024 )) ~/fill")
    try:
        proc = run_cli("board", "install", "--vm", "--wheel", str(good), "--venv", "~/full")
        _refused(proc, 2, "MiB free")
    finally:
        _ssh("rm", "-f", "fill")
    left = _ssh("sh", "-c", "ls -a ~ ~/.cache/rvtorch-board/files 2>/dev/null || true")
    assert "aarch64" not in left and "full" not in left and ".tmp-" not in left


def test_a_wheel_that_does_not_import_leaves_the_old_venv(board: dict[str, object],
                                                          tmp_path: Path) -> None:
    good = stand_in_wheel(tmp_path / "good")
    _ok(run_cli("board", "install", "--vm", "--wheel", str(good), "--venv", "~/keep",
                timeout=3600))
    bad = stand_in_wheel(tmp_path / "bad", fail_import=True)
    proc = run_cli("board", "install", "--vm", "--wheel", str(bad), "--venv", "~/keep",
                   timeout=3600)
    _refused(proc, 5, "import torch fails")
    got = _ssh("sh", "-c", "~/keep/bin/python -c 'import torch; print(torch.__version__)'; "
               "ls -d ~/keep*")
    assert got.split() == ["2.6.0+riscv64", "/home/rvtorch/keep"]


def test_real_wheel_smoke_suite_on_the_board(board: dict[str, object], tmp_path: Path) -> None:
    wheel = os.environ.get("RVTORCH_BOARD_WHEEL")
    if not wheel:
        found = sorted(Path(__file__).resolve().parents[2].glob("dist/torch-*riscv64*.whl"))
        wheel = str(found[-1]) if found else ""
    if not wheel:
        pytest.skip("no riscv64 torch wheel: set RVTORCH_BOARD_WHEEL (./scripts/build_torch.sh "
                    "makes one in dist/)")
    proc = run_cli("board", "validate", "--vm", "--wheel", wheel, "--suite", "smoke",
                   "--report", str(tmp_path / "report"), timeout=7200)
    _ok(proc)
    report = json.loads((tmp_path / "report/report.json").read_text())
    assert report["ok"] and report["runs"][0]["cpu"] == CPU


def test_aarch64_board_installs_and_validates_its_wheel(arm_board: dict[str, object],
                                                        tmp_path: Path) -> None:
    """The same path on the aarch64 board: boot, the other arch refused, pip + smoke."""
    assert arm_board["running"] and arm_board["ssh_ok"] and arm_board["cpu"] == ARM_CPU
    machine, pyver = _ssh("sh", "-c", "uname -m; python3 -c 'import sys; "
                          "print(sys.version_info[:2])'", arch="aarch64").split("\n", 1)
    assert machine == "aarch64" and pyver.strip() == "(3, 13)"
    riscv = stand_in_wheel(tmp_path / "riscv")
    proc = run_cli("board", "install", "--vm", "--arch", "aarch64", "--wheel", str(riscv))
    _refused(proc, 2, "is aarch64, torch-2.6.0+riscv64")

    wheel = debian_torch_wheel("aarch64")
    report_dir = tmp_path / "report"
    out = _ok(run_cli("board", "validate", "--vm", "--arch", "aarch64", "--wheel", str(wheel),
                      "--venv", "~/torch-venv", "--suite", "smoke", "--report", str(report_dir),
                      timeout=7200))
    assert f"validation passed on the aarch64 virtual board ({ARM_CPU})" in out, out
    report, smoke = _smoke_report(report_dir)
    assert report["ok"] and report["runs"][0]["cpu"] == ARM_CPU
    install = report["target"]["install"]
    assert install["cpu"]["machine"] == "aarch64" and not install["cpu"]["vector"]
    assert str(install["openblas_core"]).lower() == "cortexa53", install["openblas_core"]
    where = _check(smoke, "torch_location")
    assert where["ok"] and where["value"].startswith("/home/rvtorch/torch-venv/lib/python3.13/")
    assert _ssh("sh", "-c", "ls -d ~/torch-venv*", arch="aarch64").split() == [
        "/home/rvtorch/torch-venv"]
