"""The validation suites for real: Debian's torch under QEMU against the x86 reference rootfs.

Needs root (the cached rootfs are made with debootstrap and run by chroot/QEMU). The x86
references are made once per cache (content-hashed) and shared by every test here. Each test
prints its wall time; they are the CI share of the validation layer. The default riscv64
validation runs twice (explicit qemu -L with no binfmt entry, and binfmt): on one RVV model in the
default run, on every model with RVTORCH_TEST_SLOW=1.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from rvtorch import emulate
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


def _suite_results(rep: dict) -> dict:
    """{(cpu, suite, check): (ok, value)} of a report: what two runs must agree on."""
    return {(run["cpu"], suite, c["name"]): (c["ok"], json.dumps(c.get("value"), sort_keys=True))
            for run in rep["runs"] for suite, s in run["suites"].items()
            for c in (s.get("result") or {}).get("checks", [])}


def mode_cpus() -> list[str]:
    """CPU models of the both-mode runs: every model with RVTORCH_TEST_SLOW=1 (the whole default
    validation, about 7 min per mode on 2 cores); in the default run one RVV model (rvv128: the
    vector kernels, the emulation-mode difference, about a third of that), to fit CI's budget."""
    t = matrix().target("riscv64")
    return list(t.cpu_names) if os.environ.get("RVTORCH_TEST_SLOW") == "1" else ["rvv128"]


@pytest.fixture(scope="module")
def rootfs_torch_both_modes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The default `rvtorch validate --arch riscv64 --rootfs-torch` (every default suite, the
    models of :func:`mode_cpus`) once with no binfmt entry for riscv64 (explicit `qemu -L`) and
    once with one registered (chroot); both tests below share the two runs."""
    from tests.emulated.test_emulation import binfmt

    t = matrix().target("riscv64")
    cpus = [a for c in mode_cpus() for a in ("--cpu", c)]
    out: dict[str, dict] = {}
    for mode in ("qemu", "binfmt"):
        with binfmt(t, on=mode == "binfmt"):
            state = emulate.binfmt_state(t)
            say(f"binfmt for riscv64 during the {mode} run: {state.describe()}")
            code, err, rep = validate("--arch", "riscv64", "--rootfs-torch", *cpus,
                                      report=tmp_path_factory.mktemp(mode) / "rep")
        out[mode] = {"code": code, "stderr": err, "report": rep, "entries": state.entries}
    return out


@pytest.mark.parametrize("mode", ["qemu", "binfmt"])
def test_riscv64_default_validation_passes_in_each_emulation_mode(
        rootfs_torch_both_modes: dict[str, dict], mode: str) -> None:
    run = rootfs_torch_both_modes[mode]
    assert run["code"] == 0, run["stderr"][-3000:]
    rep = run["report"]
    assert rep["ok"] and rep["verdict"] == "passed"
    assert rep["qemu"]["mode"] == mode
    if mode == "qemu" and os.environ.get("RVTORCH_TEST_KEEP_BINFMT") != "1":
        assert not run["entries"], "explicit mode must run with no usable binfmt entry"
    assert [r["cpu"] for r in rep["runs"]] == mode_cpus()
    for r in rep["runs"]:
        assert {s: v["status"] for s, v in r["suites"].items()} == {
            "smoke": "passed", "reflow": "passed", "fl": "passed"}
        smoke = r["suites"]["smoke"]["result"]
        # The kernel OpenBLAS picked is the CPU model's (RISCV64_GENERIC without V, ZVL with).
        assert smoke["info"]["blas"]["corename"].lower() == r["expected_blas_core"].lower()
        say(f"riscv64 {mode} {r['cpu']}: " + ", ".join(
            f"{s} {v['wall_s']:.0f} s" for s, v in r["suites"].items()))


def test_both_emulation_modes_give_the_same_results(
        rootfs_torch_both_modes: dict[str, dict]) -> None:
    """Same QEMU, same CPU models, same torch: every check and every compared figure agrees."""
    a = _suite_results(rootfs_torch_both_modes["qemu"]["report"])
    b = _suite_results(rootfs_torch_both_modes["binfmt"]["report"])
    assert a.keys() == b.keys() and len(a) > 100
    assert {k: v[0] for k, v in a.items()} == {k: v[0] for k, v in b.items()}
    differ = [k for k in a if a[k][1] != b[k][1]]
    # Wall-clock checks may differ; numbers computed by torch must not.
    assert not [k for k in differ if k[1] == "smoke" and k[2].startswith("op:")], differ


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
