"""The validation suites for real: Debian's torch under QEMU against the x86 reference rootfs.

Needs root (the cached rootfs are made with debootstrap and run by chroot/QEMU). The x86
references are made once per cache (content-hashed) and shared by every test here. Each test
prints its wall time; they are the CI share of the validation layer (~12 min cold).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from rvtorch.emulate import guest_tmpdir, run_guest
from rvtorch.rootfs import ensure_rootfs
from rvtorch.targets import matrix
from rvtorch.validation import copy_package
from tests.conftest import run_cli

pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(os.geteuid() != 0, reason="rootfs creation and chroot need root"),
]


def say(msg: str) -> None:
    print(f"\n[validate-test] {msg}", file=sys.__stderr__, flush=True)


def validate(*args: str, report: Path) -> tuple[int, str, dict]:
    t0 = time.monotonic()
    proc = run_cli("validate", *args, "--report", str(report), timeout=3600)
    wall = time.monotonic() - t0
    say(f"rvtorch validate {' '.join(args)}: exit {proc.returncode} in {wall:.0f} s")
    for line in proc.stdout.splitlines():
        say(line)
    data = json.loads((report / "report.json").read_text()) if (report / "report.json").exists() \
        else {}
    return proc.returncode, proc.stderr, data


def test_selftest_of_the_metrics_in_the_x86_reference() -> None:
    """Metrics, samplers and tolerances on inputs with known answers (Debian amd64 torch)."""
    rootfs = ensure_rootfs("host", with_torch=True)
    with guest_tmpdir(rootfs, "host") as (hdir, gdir):
        copy_package(hdir)
        proc = run_guest("host", ["python3", "-m", "rvtorch_validate.selftest"], rootfs=rootfs,
                         env={"PYTHONPATH": gdir}, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed" in proc.stdout


def test_riscv64_default_suite_scalar_and_vector(tmp_path: Path) -> None:
    t = matrix().target("riscv64")
    cpus = [t.scalar_models[0].name, t.vector_models[0].name]
    code, err, rep = validate("--arch", "riscv64", "--rootfs-torch", "--cpu", cpus[0],
                              "--cpu", cpus[1], report=tmp_path / "rv")
    assert code == 0, err[-3000:]
    assert rep["ok"] and [r["cpu"] for r in rep["runs"]] == cpus
    for run in rep["runs"]:
        smoke = run["suites"]["smoke"]["result"]
        # The kernel OpenBLAS picked is the CPU model's (RISCV64_GENERIC without V, ZVL with).
        assert smoke["info"]["blas"]["corename"].lower() == run["expected_blas_core"].lower()
        say(f"riscv64 {run['cpu']}: " + ", ".join(
            f"{s} {v['wall_s']:.0f} s" for s, v in run["suites"].items()))
    assert (tmp_path / "rv" / "report.html").exists()
    assert (tmp_path / "rv" / "fl_accuracy.png").exists()


def test_aarch64_default_suite_one_model(tmp_path: Path) -> None:
    t = matrix().target("aarch64")
    code, err, rep = validate("--arch", "aarch64", "--rootfs-torch", "--cpu",
                              t.scalar_models[0].name, report=tmp_path / "arm")
    assert code == 0, err[-3000:]
    assert rep["ok"]


def test_injected_faults_are_reported_with_exit_5(tmp_path: Path) -> None:
    """A wrong golden value, a wrong weight file and a killed rank: each one a failure."""
    t = matrix().target("riscv64")
    code, err, rep = validate("--arch", "riscv64", "--rootfs-torch", "--cpu",
                              t.scalar_models[0].name, "--inject", "wrong-golden",
                              "--inject", "wrong-weights", "--inject", "kill-rank",
                              report=tmp_path / "bad")
    assert code == 5, err[-3000:]
    assert "check(s) failed" in err.strip().splitlines()[-1]
    failures = "\n".join(rep["failures"])
    assert "smoke: op:matmul_f32" in failures
    assert "reflow: 8gaussians:student_" in failures and "_matches_host" in failures
    assert "fl: rank 1: killed by signal 9" in failures
    # Everything not broken on purpose still passed.
    suites = rep["runs"][0]["suites"]
    smoke_failed = [c["name"] for c in suites["smoke"]["result"]["checks"] if not c["ok"]]
    assert smoke_failed == ["op:matmul_f32"]


def test_a_hung_rank_is_reported_within_the_timeout() -> None:
    """A rank that hangs in round 1: its peers' collectives time out, the launcher stops it.

    Run natively in the x86 reference rootfs (the launcher logic is the same under QEMU)."""
    import shutil

    from rvtorch.digits import ensure_shards
    from rvtorch.validation import Options, PyEnv, run_fl

    host = PyEnv(name="host", rootfs=ensure_rootfs("host", with_torch=True))
    opts = Options(arch="riscv64", cpus=(), suites=("fl",), report=Path("unused"),
                   fl_timeout=20.0, fl_rounds=3)
    with host.workdir() as (hdir, gdir):
        copy_package(hdir)
        (hdir / "data").mkdir()
        shutil.copy2(ensure_shards(3, seed=0, alpha=0.5), hdir / "data" / "digits.bin")
        t0 = time.monotonic()
        run = run_fl(host, gdir, hdir, "host", opts, cpu=None, tag="", faults=["hang@2:1"])
        wall = time.monotonic() - t0
    say(f"hung rank reported after {wall:.0f} s: {run.problem}")
    assert not run.ok
    assert "rank 2: hung: stopped by the launcher" in run.problem
    assert wall < 300


def test_a_wheel_goes_into_a_fresh_venv_in_the_target_rootfs(tmp_path: Path) -> None:
    """--wheel: the guest makes the venv (--system-site-packages), the wheel lands in it."""
    import subprocess

    from rvtorch.validation import Options, target_env
    from tests.unit.test_validation import _tiny_wheel

    t = matrix().target("riscv64")
    opts = Options(arch="riscv64", cpus=(), suites=("smoke",), report=tmp_path / "r",
                   wheel=_tiny_wheel(tmp_path))
    probe = "import sys, tinypkg, torch; print(tinypkg.__file__, sys.prefix, torch.__version__)"
    with target_env(opts) as (env, info):
        cmd, genv = env.command(["-c", probe], cpu=t.scalar_models[0].name, env={})
        proc = subprocess.run(cmd, env=genv, capture_output=True, text=True, timeout=600,
                              check=False)
        venv = info["venv"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    pkg, prefix, torch_version = proc.stdout.split()
    assert pkg.startswith(f"{venv}/lib/") and prefix == venv
    assert torch_version.startswith("2.6.0")  # Debian's torch through --system-site-packages
