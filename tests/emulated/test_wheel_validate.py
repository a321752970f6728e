"""A wheel the toolkit made, validated and published (or refused) the way the build does it.

The wheel is Debian's riscv64 torch 2.6.0 repaired by ``rvtorch.wheel.repair_wheel``
(tests/emulated/debian_wheel.py): a real torch with its libraries bundled, in place of a wheel
from the two-hour build. Costs (2 cores, estimates for an idle machine): making the wheel about
5 min once per cache; `validate --wheel` on one CPU model (pip install + the default suites) about
5 min; the refused wheel (one model) about 5 min; the clean venv in both modes 1 min each.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from rvtorch.errors import ValidationError
from rvtorch.rootfs import read_manifest
from rvtorch.targets import matrix
from tests.conftest import run_cli
from tests.emulated.debian_wheel import REQUIRES, debian_torch_wheel

pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(os.geteuid() != 0, reason="rootfs creation and chroot need root"),
]


def say(msg: str) -> None:
    print(f"\n[wheel-validate-test] {msg}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="module")
def wheel() -> Path:
    t0 = time.monotonic()
    w = debian_torch_wheel("riscv64")
    say(f"{w.name}: {w.stat().st_size / 1e6:.1f} MB, ready in {time.monotonic() - t0:.0f} s")
    return w


def test_validate_wheel_pip_installs_into_a_clean_venv_and_passes(wheel: Path,
                                                                  tmp_path: Path) -> None:
    # One CPU model with RVV (its OpenBLAS kernel checked); the refused-wheel test below runs
    # the scalar one, and the build itself runs every model.
    cpu = matrix().target("riscv64").vector_models[0].name
    t0 = time.monotonic()
    proc = run_cli("validate", "--arch", "riscv64", "--wheel", str(wheel), "--cpu", cpu,
                   "--report", str(tmp_path / "rep"), timeout=5400)
    say(f"validate --wheel: exit {proc.returncode} in {time.monotonic() - t0:.0f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    target = rep["target"]
    # A clean venv in the base rootfs: no Debian torch anywhere on its path.
    assert target["torch_source"] == "wheel"
    manifest = read_manifest(Path(target["rootfs"]))
    assert manifest is not None and manifest["with_torch"] is False
    assert not any(p.startswith("python3-torch") for p in manifest["packages"])
    # pip installed torch and every dependency from the wheelhouse (and itself).
    pkgs = {k.lower(): v for k, v in target["packages"].items()}
    assert pkgs["torch"] == "2.6.0+riscv64"
    for dep in ("sympy", "mpmath", "filelock", "typing_extensions", "networkx", "jinja2",
                "markupsafe", "fsspec", "setuptools", "pip"):
        assert dep in {k.replace("-", "_") for k in pkgs}, (dep, pkgs)
    assert len(REQUIRES) == 7
    assert [r["cpu"] for r in rep["runs"]] == [cpu]
    for run in rep["runs"]:
        assert {s: v["status"] for s, v in run["suites"].items()} == {
            "smoke": "passed", "reflow": "passed", "fl": "passed"}
        checks = {c["name"]: c for c in run["suites"]["smoke"]["result"]["checks"]}
        # torch came from the venv, and the bundled OpenBLAS picked the model's kernel.
        assert checks["torch_location"]["ok"]
        assert checks["torch_location"]["value"].startswith(target["venv"])
        assert checks["blas_kernel"]["ok"], checks["blas_kernel"]
        say(f"riscv64 {run['cpu']}: " + ", ".join(
            f"{s} {v['wall_s']:.0f} s" for s, v in run["suites"].items()))
    say(f"pip install in the guest: {target['install_s']} s")


def test_a_wheel_that_computes_something_wrong_is_not_published(wheel: Path,
                                                                tmp_path: Path) -> None:
    """The build's publish gate with a fault injected: exit 5, dist/ unchanged, the wheel and
    its report in rejected/."""
    from rvtorch.build import validate_and_publish

    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "earlier-torch.whl").write_bytes(b"an earlier wheel")
    rejected = tmp_path / "tree" / "build" / "rejected"
    t0 = time.monotonic()
    with pytest.raises(ValidationError) as exc:
        validate_and_publish(wheel, "riscv64", dist, rejected, {"steps": {}},
                             cpus=(matrix().target("riscv64").cpu[0].name,),
                             inject=("wrong-golden",))
    say(f"refused in {time.monotonic() - t0:.0f} s: {exc.value.one_line()[:200]}")
    assert exc.value.exit_code == 5 and "op:matmul_f32" in str(exc.value)
    assert [p.name for p in dist.iterdir()] == ["earlier-torch.whl"]
    assert (dist / "earlier-torch.whl").read_bytes() == b"an earlier wheel"
    assert (rejected / wheel.name).stat().st_size == wheel.stat().st_size
    report = json.loads((rejected / f"{wheel.name}.validation" / "report.json").read_text())
    assert report["verdict"] == "failed" and report["inject"] == ["wrong-golden"]
    info = json.loads((rejected / f"{wheel.name}.build-info.json").read_text())
    assert info["validation"]["status"] == "failed"


@pytest.mark.parametrize("mode", ["qemu", "binfmt"])
def test_the_clean_venv_works_in_both_emulation_modes(mode: str, tmp_path: Path) -> None:
    """pip from the wheelhouse into a venv of the base rootfs, then the venv's python imports
    what pip installed (MarkupSafe's riscv64 C extension included): with explicit `qemu -L` the
    venv is found only through argv[0] (qemu -0). About 1 min per mode."""
    import subprocess

    from rvtorch.emulate import guest_command, guest_tmpdir
    from rvtorch.rootfs import ensure_rootfs
    from rvtorch.wheelhouse import install_in_rootfs
    from tests.emulated.test_emulation import binfmt
    from tests.wheelkit import make_wheel

    w = make_wheel(tmp_path, {
        "tinypkg/__init__.py": "import jinja2, markupsafe._speedups as s\nSPEEDUPS = s.__file__\n",
        "tinypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n"
                                          "Requires-Dist: jinja2\n"}, name="tinypkg",
        version="1.0", tag="py3-none-any")
    root = ensure_rootfs("riscv64")
    probe = "import sys, tinypkg; print(sys.prefix, sys.base_prefix, tinypkg.SPEEDUPS)"
    with binfmt(matrix().target("riscv64"), on=mode == "binfmt"), \
            guest_tmpdir(root, "riscv64") as (host, guest):
        inst = install_in_rootfs("riscv64", root, w, (host, guest))
        cmd, env = guest_command("riscv64", [inst.python_guest, "-c", probe], rootfs=root)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                              check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    prefix, base, speedups = proc.stdout.split()
    assert prefix == inst.venv_guest and base != prefix
    assert speedups.startswith(f"{inst.venv_guest}/lib/python3.13/site-packages/markupsafe/")
    assert speedups.endswith("riscv64-linux-gnu.so")
    assert inst.packages == {"Jinja2": "3.1.6", "MarkupSafe": "3.0.3", "pip": "26.3",
                             "tinypkg": "1.0"}
    say(f"{mode}: venv + pip install in {inst.seconds:.0f} s")
