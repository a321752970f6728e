"""The torch cross build on real inputs: Debian's 2.6.0 source, the patch series, CMake configure in
the toolchain image for every target, a partial riscv64 compile whose libc10.so runs under QEMU,
and bad input (corrupt download, a patch that does not apply, a build killed halfway).

Everything here shares one cache (``$RVTORCH_CACHE/itest``): the source tarball, the patched trees,
ninja build directories and ccache survive between runs, so a rerun is warm. The toolchain image
comes from ``rvtorch.image.ensure_image`` (built once, content-hashed).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rvtorch.targets import matrix
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.integration

ARCHES = matrix().arches


def cli(env: dict[str, str], *args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    r = run_cli(*args, env=env, timeout=timeout)
    sys.stderr.write(r.stderr[-3000:])
    return r


def plan_for(env: dict[str, str], arch: str, *extra: str) -> dict:
    r = cli(env, "build", "--arch", arch, "--source", "debian", "--dry-run", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# ------------------------------------------------------------------------------- source + patches
def test_fetch_verifies_the_real_source(env: dict[str, str]) -> None:
    r = cli(env, "source", "fetch", "--source", "debian")
    assert r.returncode == 0, r.stderr
    orig = Path(env["RVTORCH_CACHE"]) / "sources/debian/pytorch_2.6.0+dfsg.orig.tar.xz"
    assert hashlib.sha256(orig.read_bytes()).hexdigest() == (
        "099a9601bc40d67656e75735c44abedb0fbe92d08817852ab7472eebb7e6ddff")


def test_series_applies_to_the_real_debian_source(env: dict[str, str]) -> None:
    r = cli(env, "patches", "check", "--source", "debian")
    assert r.returncode == 0, r.stderr
    assert "patches of 2.6.0 apply to the debian source" in r.stderr


def test_dry_run_shows_the_resolved_flags(env: dict[str, str]) -> None:
    plan = plan_for(env, "riscv64")
    assert plan["env"]["USE_XNNPACK"] == "0" and plan["env"]["BLAS"] == "OpenBLAS"
    assert "-DUSE_SYSTEM_SLEEF=1" in plan["cmake"]
    assert plan["source"]["files"][0]["sha256"].startswith("099a9601")
    assert len(plan["patches"]) >= 6


class _Corrupt(http.server.BaseHTTPRequestHandler):
    """A mirror that serves garbage under every pool path."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b"not an xz archive " * 64
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def corrupt_mirror() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Corrupt)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/debian"
    httpd.shutdown()


def test_corrupt_download_is_deleted_exit_3(tmp_path: Path, corrupt_mirror: str) -> None:
    env = {"RVTORCH_CACHE": str(tmp_path)}
    r = cli(env, "source", "fetch", "--source", "debian", "--debian-mirror", corrupt_mirror)
    assert r.returncode == 3, r.stderr
    assert "file deleted" in r.stderr and r.stderr.count("rvtorch: error") == 1
    assert not list((tmp_path / "sources" / "debian").glob("pytorch*"))


def test_corrupt_cached_tarball_is_deleted_exit_3(tmp_path: Path, itest_cache: Path) -> None:
    deb = tmp_path / "sources" / "debian"
    deb.mkdir(parents=True)
    good = itest_cache / "sources/debian/pytorch_2.6.0+dfsg.orig.tar.xz"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle
    (deb / good.name).write_bytes(bytes(data))
    r = cli({"RVTORCH_CACHE": str(tmp_path)}, "source", "unpack", "--source", "debian",
            str(tmp_path / "tree"))
    assert r.returncode == 3, r.stderr
    assert "sha256" in r.stderr and not (deb / good.name).exists()
    assert not (tmp_path / "tree").exists()


def _tree_digest(tree: Path, rel: list[str]) -> dict[str, str]:
    return {r: hashlib.sha256((tree / r).read_bytes()).hexdigest() for r in rel}


def test_patch_that_does_not_apply_leaves_tree_untouched(
    env: dict[str, str], itest_cache: Path, tmp_path: Path
) -> None:
    tree = itest_cache / "pristine-2.6.0"
    if not (tree / "setup.py").exists():
        r = cli(env, "source", "unpack", "--source", "debian", str(tree))
        assert r.returncode == 0, r.stderr
    series = tmp_path / "series"
    shutil.copytree(ROOT / "patches/torch/2.6.0", series)
    # Break the context of the OpenBLAS patch's only hunk: the ones before it apply, it does not.
    [last] = sorted(series.glob("*-OpenBLAS-*.patch"))
    text = last.read_text()
    broken = text.replace(' set(BLAS_INFO "open")', ' set(BLAS_INFO "openblas-renamed")', 1)
    assert broken != text
    last.write_text(broken)
    watched = ["cmake/Dependencies.cmake", "CMakeLists.txt", "cmake/Modules/FindARM.cmake"]
    before = _tree_digest(tree, watched)
    r = cli(env, "patches", "apply", "--source", "debian", "--patch-dir", str(series), str(tree))
    assert r.returncode == 3, r.stderr
    assert last.name in r.stderr and "hunk #1" in r.stderr
    assert "cmake/Dependencies.cmake" in r.stderr
    assert _tree_digest(tree, watched) == before
    assert not list(tree.parent.glob(f".{tree.name}.*"))  # no staging copy left behind


# ----------------------------------------------------------------------------- in the image
@pytest.fixture
def no_binfmt(arch: str) -> Iterator[None]:
    """The target's binfmt_misc entries disabled for the test (restored afterwards): a fresh
    machine has none, and the configure must not depend on them."""
    from rvtorch import emulate

    t = matrix().target(arch)
    disabled = []
    if emulate.binfmt_mounted():
        for e in emulate.matching_entries(t):
            if e.enabled:
                emulate.set_entry_enabled(e.name, False)
                disabled.append(e.name)
    try:
        assert not emulate.binfmt_state(t).usable_in(None)
        yield
    finally:
        for name in disabled:
            # A temporary entry may have been removed meanwhile by the process that registered
            # it (rvtorch.emulate.binfmt_registered): nothing to restore then.
            if (emulate.BINFMT_DIR / name).exists():
                emulate.set_entry_enabled(name, True)


@pytest.mark.parametrize("arch", ARCHES)
def test_configure_in_the_image(env: dict[str, str], arch: str, no_binfmt: None) -> None:
    tree = Path(plan_for(env, arch)["tree"])
    build = tree / "build"
    log_path = build / "rvtorch-build.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    r = cli(env, "build", "--arch", arch, "--source", "debian", "--stage", "configure",
            "--jobs", "2")
    assert r.returncode == 0, r.stderr
    cache = (build / "CMakeCache.txt").read_text()
    # No binfmt entry, yet the new C++ ABI (given, not probed) and no probe that could not run.
    assert re.search(r"^GLIBCXX_USE_CXX11_ABI(:\w+)?=1$", cache, re.M)
    this_run = log_path.read_text(errors="replace")[offset:]
    assert "Could not run" not in this_run
    info = json.loads((build / "rvtorch-build-info.json").read_text())
    assert info["configure"] == {"binfmt": "none", "GLIBCXX_USE_CXX11_ABI": "1"}
    t = matrix().target(arch)
    assert f"CMAKE_TOOLCHAIN_FILE:FILEPATH=/opt/rvtorch/toolchains/{t.triple}.cmake" in cache
    system = "".join(p.read_text() for p in build.glob("CMakeFiles/*/CMakeSystem.cmake"))
    assert f'set(CMAKE_SYSTEM_PROCESSOR "{t.cmake_system_processor}")' in system
    # System libraries come from the target's multiarch sysroot, not the build machine's.
    assert f"OpenBLAS_LIB:FILEPATH=/usr/lib/{t.triple}/libopenblas.so" in cache
    assert f"SLEEF_LIBRARY:FILEPATH=/usr/lib/{t.triple}/libsleef.so" in cache
    assert "USE_XNNPACK:BOOL=0" in cache and "USE_DISTRIBUTED:BOOL=1" in cache
    # gloo is the vendored one (static, TCP only), not the sysroot's libgloo with MPI/ibverbs/redis;
    # cpp-httplib is the vendored header-only one (no libcpp-httplib.so to link).
    assert "USE_SYSTEM_GLOO:BOOL=0" in cache and "GLOO_STATIC_OR_SHARED:STRING=STATIC" in cache
    assert "Gloo_LIBRARY" not in cache and "HTTPLIB_LIBRARY" not in cache
    gloo_config = (build / "third_party/gloo/gloo/config.h").read_text()
    for flag in ("MPI", "IBVERBS", "REDIS"):
        assert f"#define GLOO_USE_{flag} 0" in gloo_config
    assert "#define GLOO_HAVE_TRANSPORT_TCP 1" in gloo_config
    log = (build / "rvtorch-build.log").read_text(errors="replace")
    assert "Using system fmt" in log and "Build files have been written to" in log
    if arch == "riscv64":  # the aten-rvv group is on by default there
        _assert_rvv_kernel_copies(build)


def _assert_rvv_kernel_copies(build_dir: Path) -> None:
    """An RVV copy (-O2, -march=rv64gcv) for exactly the files of build.RVV_KERNELS; every other
    kernel file's DEFAULT copy is the wrapper that fills the RVV dispatch slot."""
    from rvtorch.build import RVV_KERNELS

    entries = json.loads((build_dir / "compile_commands.json").read_text())
    copies: dict[str, dict[str, str]] = {}
    for e in entries:
        m = re.search(r"/([A-Za-z0-9_]+)\.cpp\.(DEFAULT|RVV)\.cpp$", e["file"])
        if m:
            copies.setdefault(m.group(2), {})[m.group(1)] = e["command"]
    assert set(copies["RVV"]) == set(RVV_KERNELS)
    assert set(RVV_KERNELS) < set(copies["DEFAULT"])
    for cmd in copies["RVV"].values():
        assert "-march=rv64gcv" in cmd and re.search(r" -O2 .*-march=rv64gcv", cmd)
    gen = build_dir / "aten" / "src" / "ATen"
    for stem in copies["DEFAULT"]:
        (src,) = [p for p in gen.rglob(f"{stem}.cpp.DEFAULT.cpp")]
        fills_rvv_slot = "REGISTER_ARCH_DISPATCH(name, RVV, fn)" in src.read_text()
        assert fills_rvv_slot == (stem not in RVV_KERNELS), stem


@pytest.mark.parametrize("arch", ["riscv64"])
def test_a_probe_that_cannot_run_stops_the_build_at_configure(
    itest_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arch: str,
    no_binfmt: None,
) -> None:
    """Planted: the ABI flag removed, so PyTorch's own CheckAbi.cmake must run a target program
    with no binfmt entry. The build stops at configure (exit 4) and compiles nothing."""
    import dataclasses

    from rvtorch import build
    from rvtorch.errors import BuildError

    monkeypatch.setenv("RVTORCH_CACHE", str(itest_cache))
    # A partial stage: should the check ever let it through, only c10 compiles (and the
    # assertions below fail), never a whole torch.
    plan = build.make_plan(arch, provider="debian", stage="partial", targets=["c10"],
                           out=tmp_path / "dist", jobs=2)
    env = {k: v for k, v in plan.env.items() if k != "_GLIBCXX_USE_CXX11_ABI"}
    planted = dataclasses.replace(plan, env=env, cmake=build.cmake_flags(env),
                                  tree=str(tmp_path / "tree"))
    with pytest.raises(BuildError) as exc:
        build.run_build(planted, provider="debian")
    assert exc.value.exit_code == 4
    assert "could not run a target program: Could not run ABI Check" in exc.value.one_line()
    log = (tmp_path / "tree" / "build" / "rvtorch-build.log").read_text(errors="replace")
    assert "rvtorch: step compile" not in log and "Building CXX object" not in log
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def _kill_when(log: Path, proc: subprocess.Popen[str], pattern: str, timeout: float) -> bool:
    """SIGINT-free hard kill of the whole build process group once ``pattern`` is in the log."""
    import re

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and re.search(pattern, log.read_text(errors="replace")[-20000:], re.M):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)
            return True
        time.sleep(2)
    return False


def test_partial_riscv64_build_runs_under_qemu_and_resumes_after_a_kill(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A build killed halfway leaves the output dir untouched; the rerun resumes and finishes; the
    cross-built libc10.so links into a program that runs under qemu-riscv64."""
    out = tmp_path / "dist"
    out.mkdir()
    plan = plan_for(env, "riscv64", "--stage", "partial", "--out", str(out))
    tree = Path(plan["tree"])
    log = tree / "build" / "rvtorch-build.log"
    offset = log.stat().st_size if log.exists() else 0
    argv = [sys.executable, "-m", "rvtorch", "build", "--arch", "riscv64", "--source", "debian",
            "--stage", "full", "--jobs", "2", "--out", str(out)]
    driver = tmp_path / "driver.log"
    with driver.open("w") as fh:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, start_new_session=True,
                                text=True, stdout=fh, stderr=subprocess.STDOUT)
    # Kill once the compile step began and ninja made progress (or the first run is cached).
    killed = _kill_when(log, proc, r"^\[[2-9]\d*/\d{3,}\]", timeout=1500)
    if not killed:
        proc.kill()
    assert killed, "the build never reached its compile step: " + driver.read_text()[-1500:]
    assert list(out.iterdir()) == []  # nothing half-written in dist
    time.sleep(3)  # let the container engine notice its dead client
    r = cli(env, "build", "--arch", "riscv64", "--source", "debian", "--stage", "partial",
            "--jobs", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    text = log.read_text(errors="replace")[offset:]
    assert "rvtorch: step compile" in text
    build = tree / "build"
    for rel in ("lib/libc10.so", *(t for t in plan["targets"] if t.endswith(".o"))):
        assert (build / rel).exists(), rel
    assert list(out.iterdir()) == []  # a partial build publishes nothing

    # Something built from it runs under QEMU: a program linked against the cross-built c10.
    from rvtorch.engine import detect_engine

    (build / "itest").mkdir(exist_ok=True)
    (build / "itest" / "c10_smoke.cpp").write_text(
        '#include <c10/core/Device.h>\n#include <c10/util/StringUtil.h>\n#include <iostream>\n'
        "int main() {\n"
        '  c10::Device d("cpu:0");\n'
        '  std::cout << c10::str("c10 says ", d, " index=", int(d.index())) << std::endl;\n'
        "  return d.is_cpu() ? 0 : 1;\n}\n")
    engine = detect_engine()
    image = json.loads((build / "rvtorch-build-info.json").read_text())["image"]
    src = "/rvtorch/src"
    compile_cmd = (
        f"$CXX -std=c++17 -O1 -I{src} -I{src}/build -I{src}/build/c10 "  # c10/macros/cmake_macros.h
        f"{src}/build/itest/c10_smoke.cpp -o {src}/build/itest/c10_smoke "
        f"-L{src}/build/lib -lc10 && "
        f"LD_LIBRARY_PATH={src}/build/lib qemu-riscv64-static -cpu rv64 "
        f"{src}/build/itest/c10_smoke && file {src}/build/itest/c10_smoke")
    with engine.container(image, mounts={str(tree): src},
                          env={"QEMU_LD_PREFIX": "/"}) as ctr:
        res = ctr.call(["bash", "-c", compile_cmd], capture=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "c10 says cpu:0 index=0" in res.stdout
    assert "RISC-V" in res.stdout

    # The debian prepare step regenerated the flatbuffers header for the sysroot's flatbuffers.
    assert list(tree.glob(".rvtorch-prepare-*"))
    assert (build / "caffe2/CMakeFiles/torch_cpu.dir/__/torch/csrc/jit/mobile/"
            "flatbuffer_loader.cpp.o").exists()

    # Patch 0005 in the object code: the BLAS glue calls OpenBLAS's cblas dot wrappers.
    blas_obj = next(t for t in plan["targets"] if t.endswith("native/BlasKernel.cpp.o"))
    with engine.container(image, mounts={str(tree): src}) as ctr:
        nm = ctr.call(["riscv64-linux-gnu-nm", "-u", f"{src}/build/{blas_obj}"], capture=True)
        # The vendored gloo: a riscv64 static archive with the TCP transport and no MPI, and the
        # header-only httplib compiled into the control-plane server (no libcpp-httplib symbols).
        gloo = ctr.call(["bash", "-c", f"riscv64-linux-gnu-nm -C {src}/build/lib/libgloo.a | "
                         "grep -c 'gloo::transport::tcp::Device::' ; "
                         f"riscv64-linux-gnu-nm -u {src}/build/lib/libgloo.a | grep -c MPI_ ; "
                         f"riscv64-linux-gnu-objdump -f {src}/build/lib/libgloo.a | "
                         "grep -m1 'file format'"], capture=True, check=False)
        worker = next(t for t in plan["targets"] if t.endswith("WorkerServer.cpp.o"))
        httplib = ctr.call(["riscv64-linux-gnu-nm", "-C", f"{src}/build/{worker}"], capture=True)
    undefined = nm.stdout.split()
    assert "cblas_cdotu_sub" in undefined and "cdotu_" not in undefined
    tcp_syms, mpi_syms, fmt = gloo.stdout.split("\n", 2)
    assert int(tcp_syms) > 0 and int(mpi_syms) == 0 and "elf64-littleriscv" in fmt, gloo.stdout
    # Header-only: httplib::Server's members are defined (weak, inline) in the object itself, and
    # none is left for a compiled libcpp-httplib to provide.
    assert re.search(r"^\S+ [WT] httplib::Server::listen_internal\(\)", httplib.stdout, re.M)
    assert not re.search(r"^\s+U httplib::", httplib.stdout, re.M)


def test_auto_falls_back_to_debian_with_one_notice(env: dict[str, str]) -> None:
    """Where the upstream git server does not answer (as here), auto uses the debian source."""
    from rvtorch.sources import upstream_reachable
    from rvtorch.torchspec import torch_version

    if upstream_reachable(torch_version()):
        pytest.skip("the upstream git server is reachable from this machine")
    t0 = time.monotonic()
    r = cli(env, "source", "fetch")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 60
    notices = [ln for ln in r.stderr.splitlines() if "notice:" in ln]
    assert len(notices) == 1 and "using the debian source provider" in notices[0]
    assert json.loads(r.stdout)["provider"] == "debian"
