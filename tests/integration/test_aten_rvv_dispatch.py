"""The RVV CPU capability of the aten-rvv patches (0002) without a full torch build.

`rvtorch build --aten-rvv on --stage partial` configures the real source in the image (the RVV
capability must be found and every kernel file get an RVV copy) and compiles c10, the patched
DispatchStub.cpp and one kernel's RVV object. A probe program (tests/aten_rvv/dispatch_probe.cpp)
then links that DispatchStub object and libc10 and runs under QEMU: rv64 (no V) must choose
DEFAULT, the RVV models RVV; ATEN_CPU_CAPABILITY=default forces DEFAULT, =rvv on rv64 warns and
stays DEFAULT; a stub without an RVV kernel falls back to DEFAULT.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rvtorch import build
from rvtorch.targets import matrix
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.integration

TARGET = matrix().target("riscv64")
OBJ = "caffe2/CMakeFiles/torch_cpu.dir/__/aten/src/ATen"
DISPATCH_OBJ = f"{OBJ}/native/DispatchStub.cpp.o"
KERNEL_OBJ = f"{OBJ}/native/cpu/SoftMaxKernel.cpp.RVV.cpp.o"
# Runs the probe on a QEMU CPU with guest environment variables.
Probe = Callable[..., subprocess.CompletedProcess[str]]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    r = run_cli(*args, env=env, timeout=5400)
    sys.stderr.write(r.stderr[-3000:])
    return r


@pytest.fixture(scope="module")
def rvv_build(env: dict[str, str]) -> Path:
    """The --aten-rvv on tree, configured, with c10, DispatchStub.cpp.o and an RVV kernel."""
    start = time.monotonic()
    r = _cli(env, "build", "--arch", "riscv64", "--source", "debian", "--aten-rvv", "on",
             "--stage", "partial", "--jobs", "2", "--no-validate", "--target", "c10",
             "--target", DISPATCH_OBJ, "--target", KERNEL_OBJ)
    assert r.returncode == 0, r.stderr[-3000:]
    sys.stderr.write(f"aten-rvv: configure + partial build in {time.monotonic() - start:.0f} s\n")
    plan = _cli(env, "build", "--arch", "riscv64", "--source", "debian", "--aten-rvv", "on",
                "--dry-run")
    assert plan.returncode == 0, plan.stderr
    return Path(json.loads(plan.stdout)["tree"])


def test_configure_finds_the_rvv_capability(rvv_build: Path) -> None:
    build_dir = rvv_build / "build"
    log = (build_dir / "rvtorch-build.log").read_text(errors="replace")
    assert "-- ATen CPU capability RVV: -march=rv64gcv" in log
    cache = (build_dir / "CMakeCache.txt").read_text()
    assert "USE_RVV:BOOL=1" in cache and "CXX_RVV_FOUND:INTERNAL=1" in cache
    ninja = (build_dir / "build.ninja").read_text()
    kernels = sorted(p.name for p in (rvv_build / "aten/src/ATen/native/cpu").glob("*.cpp"))
    assert kernels
    for name in kernels:  # every kernel file has an RVV copy built with the RVV flags
        assert f"native/cpu/{name}.RVV.cpp.o:" in ninja, name
    rule = ninja[ninja.index(f"build {KERNEL_OBJ}:"):][:20000]
    flags = re.search(r"^\s*FLAGS = (.*)$", rule, re.M)
    assert flags and flags.group(1).split().index("-march=rv64gcv") > \
        flags.group(1).split().index("-march=rv64gc")
    assert "-DCPU_CAPABILITY=RVV" in flags.group(1) and "-DCPU_CAPABILITY_RVV" in flags.group(1)
    assert (build_dir / KERNEL_OBJ).stat().st_size > 0


@pytest.fixture(scope="module")
def probe(rvv_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probe]:
    from rvtorch.engine import detect_engine

    work = tmp_path_factory.mktemp("dispatch-probe")
    shutil.copy(ROOT / "tests/aten_rvv/dispatch_probe.cpp", work)
    engine = detect_engine()
    plan = build.make_plan("riscv64", provider="debian", stage="partial", features=["aten-rvv"])
    image = build.ensure_build_image(plan, engine)
    gcc = matrix().project.gcc
    cxx = f"{TARGET.triple}-g++-{gcc}"
    mounts = {str(rvv_build): "/src", str(work): "/work"}
    with engine.container(image, mounts=mounts) as ctr:
        r = ctr.call(["bash", "-c", f"""set -e
{cxx} -std=c++17 -O2 -march={TARGET.march} -mabi={TARGET.mabi} -DHAVE_RVV_CPU_DEFINITION \
  -I/src/build -I/src -I/src/aten/src -c /work/dispatch_probe.cpp -o /work/probe.o
{cxx} -march={TARGET.march} -mabi={TARGET.mabi} /work/probe.o /src/build/{DISPATCH_OBJ} \
  -L/src/build/lib -Wl,-rpath,/src/build/lib -lc10 -lcpuinfo -o /work/probe
"""], capture=True, check=False, timeout=900)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]

        def run(qemu_cpu: str, **env: str) -> subprocess.CompletedProcess[str]:
            argv = [TARGET.qemu_binary, "-cpu", qemu_cpu]
            for k, v in env.items():
                argv += ["-E", f"{k}={v}"]
            res = ctr.call([*argv, "/work/probe"], capture=True, check=False, timeout=300)
            sys.stderr.write(f"probe -cpu {qemu_cpu} {env}: {res.stdout.strip()}\n")
            return res

        yield run


CPUS = {c.name: c for c in TARGET.cpu}


@pytest.mark.parametrize("cpu", list(CPUS))
def test_capability_follows_the_cpu(probe: Probe, cpu: str) -> None:
    r = probe(CPUS[cpu].qemu_cpu)
    assert r.returncode == 0, r.stderr
    if CPUS[cpu].vector:
        assert r.stdout.strip() == "capability=1 probe=rvv default_only=default"
    else:  # rv64gc: DEFAULT, and no SIGILL
        assert r.stdout.strip() == "capability=0 probe=default default_only=default"


def test_aten_cpu_capability_default_forces_scalar(probe: Probe) -> None:
    vector = next(c for c in TARGET.cpu if c.vector)
    r = probe(vector.qemu_cpu, ATEN_CPU_CAPABILITY="default")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "capability=0 probe=default default_only=default"


def test_asking_for_rvv_without_v_warns_and_stays_default(probe: Probe) -> None:
    scalar = next(c for c in TARGET.cpu if not c.vector)
    r = probe(scalar.qemu_cpu, ATEN_CPU_CAPABILITY="rvv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "capability=0 probe=default default_only=default"
    assert "RVV capability not available on hardware" in r.stderr
