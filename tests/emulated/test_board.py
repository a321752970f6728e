"""The riscv64 virtual board: boot, SSH, pip install into a venv, bad boards (docs/board.md).

One board (``rvv128``) is booted for the module and powered off at the end. The wheel
installed is the Debian-repaired stand-in of tests/integration/test_wheel_debs.py made
importable: a real riscv64 CPython 3.13 extension (python3-zstd) inside a ``torch`` package,
its libzstd bundled by :func:`rvtorch.wheel.repair_wheel` — so ``import torch`` on the board
proves the repaired wheel's ``$ORIGIN`` RPATH, the pinned wheelhouse, pip ``--no-index`` and the
venv swap on a booted kernel. With a real torch wheel (``RVTORCH_BOARD_WHEEL=dist/torch-...whl``,
made by ``./scripts/build_torch.sh``) the smoke suite also runs there.

Cost on a 2-core machine: making the board image once (apt under qemu-user, ~10 min), each
boot 2-4 min, the stand-in install about 1 min.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rvtorch.targets import matrix
from rvtorch.wheel import repair_wheel
from tests.conftest import run_cli
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


def _need_host() -> None:
    if os.geteuid() != 0:
        pytest.skip("making the board image needs root (debootstrap, chroot)")
    for tool in ("ssh", "scp", "mkfs.ext4", f"{T.triple}-strip"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} missing (scripts/lib.sh HOST_PACKAGES)")


def _ok(proc: object) -> str:
    assert getattr(proc, "returncode", None) == 0, getattr(proc, "stderr", "")[-3000:]
    return str(getattr(proc, "stdout", ""))


def _ssh(*cmd: str) -> str:
    return _ok(run_cli("board", "ssh", "--arch", "riscv64", "--", *cmd, timeout=900))


@pytest.fixture(scope="module")
def board() -> Iterator[dict[str, object]]:
    _need_host()
    _ok(run_cli("board", "up", "--arch", "riscv64", "--cpu", CPU, "--timeout", "1500",
                timeout=7200))
    info = json.loads(_ok(run_cli("board", "status", "--arch", "riscv64", "--json")))
    yield info
    run_cli("board", "down", "--arch", "riscv64", timeout=600)


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
    assert proc.returncode == 2 and "refused the key" in proc.stderr, proc.stderr

    arm = make_wheel(tmp_path / "arm", {"torch/__init__.py": ""}, version="2.6.0+aarch64",
                     tag="cp313-cp313-manylinux_2_39_aarch64")
    proc = run_cli("board", "install", "--vm", "--arch", "riscv64", "--wheel", str(arm))
    assert proc.returncode == 2 and "is riscv64" in proc.stderr, proc.stderr

    py312 = stand_in_wheel(tmp_path / "py312", tag_python="cp312")
    proc = run_cli("board", "install", "--vm", "--wheel", str(py312))
    assert proc.returncode == 2 and "no Python 3.12" in proc.stderr, proc.stderr

    # A full disk: fill it to ~100 MiB free, then the install must refuse up front.
    _ssh("sh", "-c", "avail=$(df -Pk ~ | awk 'NR==2 {print $4}'); "
         "fallocate -l $(( (avail - 100*1024) * 1024 )) ~/fill")
    try:
        proc = run_cli("board", "install", "--vm", "--wheel", str(good), "--venv", "~/full")
        assert proc.returncode == 2 and "MiB free" in proc.stderr, proc.stderr
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
    assert proc.returncode == 5 and "import torch fails" in proc.stderr, proc.stderr
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
