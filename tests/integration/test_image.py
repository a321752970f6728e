"""The toolchain image for real: offline base, build from nothing, self-test on every CPU model,
a killed build not reused.

These use the shared images through :func:`rvtorch.image.ensure_image` (built once per content
hash, then reused by every test and every area); only the base-image test bootstraps a throwaway
image of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rvtorch import image
from rvtorch.engine import detect_engine
from rvtorch.targets import matrix

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ARCHES = matrix().arches


@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    return detect_engine()


def test_base_image_offline(engine, tmp_path: Path,  # type: ignore[no-untyped-def]
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The project's base image was made by debootstrap + import and runs Debian of the project's
    suite; a bootstrap killed half-way leaves no image, and the next run cleans its leftovers."""
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root")
    m = matrix()
    mirror = image.debian_mirror()

    # 1. The base image every toolchain image is built on (made offline on a fresh machine by
    #    the images step of scripts/test.sh; bootstrapped here into a throwaway tag if the
    #    machine's base was pulled instead).
    base = image.ensure_base(engine)
    source = engine.image_labels(base).get(image.BASE_SOURCE_LABEL, "")
    scratch_ref = f"localhost/rvtorch-test-base:{uuid.uuid4().hex[:8]}"
    try:
        if not source.startswith("debootstrap "):
            image._bootstrap_base(engine, scratch_ref, m.project.suite, mirror)
            base = scratch_ref
            assert engine.image_labels(base)[image.BASE_SOURCE_LABEL] == f"debootstrap {mirror}"
        with engine.container(base) as ctr:
            out = ctr.call(["cat", "/etc/os-release"], capture=True).stdout
        assert f"VERSION_CODENAME={m.project.suite}" in out
    finally:
        engine.remove_image(scratch_ref)

    # 2. SIGKILL in debootstrap's second stage, when /proc etc. are mounted in the rootfs: the
    #    worst leftover (debootstrap's own unmounting never runs).
    cache = tmp_path / "cache"
    monkeypatch.setenv("RVTORCH_CACHE", str(cache))
    code = ("import sys; from rvtorch import image; from rvtorch.engine import detect_engine; "
            "image._bootstrap_base(detect_engine(), sys.argv[1], sys.argv[2], sys.argv[3])")
    killed = subprocess.Popen([sys.executable, "-c", code, scratch_ref, m.project.suite, mirror],
                              env={**os.environ, "RVTORCH_CACHE": str(cache)},
                              start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not image.mounts_below(cache / "image"):
            assert killed.poll() is None, "bootstrap ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=60)
        assert not engine.image_exists(scratch_ref)
        assert list((cache / "image").glob("base-*")), "the killed run left its work dir"
        # What every bootstrap does first (under the base lock): clear killed runs' leftovers.
        image._clean_stale("base-")
        assert not list((cache / "image").glob("base-*")), "leftovers of the killed run remain"
        assert not image.mounts_below(cache), "mounts of the killed run remain"
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
        engine.remove_image(scratch_ref)


@pytest.mark.parametrize("arch", ARCHES)
def test_image_builds_and_passes_self_test(engine, arch: str) -> None:  # type: ignore[no-untyped-def]
    ref = image.ensure_image(arch, engine=engine)
    t = matrix().target(arch)
    assert ref.startswith(f"{matrix().project.image}:{arch}-")
    labels = engine.image_labels(ref)
    assert labels.get("io.rvtorch.target-arch") == arch
    assert labels.get("org.opencontainers.image.revision", "unknown") != "unknown"
    assert ref.endswith(labels["io.rvtorch.content-hash"][:16])
    # The self-test ran at build time; run it again and look at every CPU model's line.
    results = image.self_test(ref, arch, engine=engine)
    assert [r.cpu for r in results] == list(t.cpu_names)
    for r, cpu in zip(results, t.cpu, strict=True):
        assert f"arch={arch} " in r.line and f"vector={int(cpu.vector)} " in r.line
    # The baked-in cross environment the other areas rely on.
    with engine.container(ref) as ctr:
        env = ctr.call(["env"], capture=True).stdout
        for line in (f"CROSS_TRIPLE={t.triple}", f"CXX={t.triple}-g++-{matrix().project.gcc}",
                     f"CMAKE_TOOLCHAIN_FILE=/opt/rvtorch/toolchains/{t.triple}.cmake",
                     "QEMU_LD_PREFIX=/"):
            assert line in env.splitlines(), line
        py = ctr.call(["python3", "-c", "import platform, crossenv, build, conans; "
                       "print(platform.machine())"], capture=True).stdout.strip()
        assert py == "x86_64"  # the build python was not replaced by the target's


def _checkout_copy(root: Path, arch: str) -> None:
    """The files `rvtorch image build` reads, copied to ``root`` (used as RVTORCH_ROOT)."""
    t = matrix().target(arch)
    for rel in [*image.image_inputs(t), "toolchains/targets.toml",
                *[f"toolchains/{p.name}" for p in (ROOT / "toolchains").glob("*.cmake")],
                *[f"toolchains/conan/{p.name}" for p in (ROOT / "toolchains/conan").iterdir()]]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, root / rel)


def test_failed_self_test_is_not_reused(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An image whose self-test fails keeps only its -untested tag: exit 4, nothing reused."""
    arch = ARCHES[0]
    t = matrix().target(arch)
    root = tmp_path / "checkout"
    _checkout_copy(root, arch)
    # A self-test program that lies about the CPU: every model must then fail the check.
    src = root / image.SELFTEST_DIR / "selftest.cpp"
    src.write_text(src.read_text().replace("cpu_has_vector() ? 1 : 0", "7"))
    base_id = engine.image_id(image.ensure_base(engine)) or matrix().project.base_image
    refs = image.ImageRefs(arch, image.content_hash(t, base_id=base_id, root=root))
    env = {**os.environ, "RVTORCH_ROOT": str(root)}
    try:
        for _ in range(2):  # the rerun builds and tests again instead of reusing
            r = subprocess.run([sys.executable, "-m", "rvtorch", "image", "build", "--arch", arch],
                               env=env, capture_output=True, text=True, timeout=1800,
                               check=False)
            assert r.returncode == 4, r.stderr[-2000:]
            last = r.stderr.strip().splitlines()[-1]
            assert last.startswith(f"rvtorch: error: image self-test failed for {arch} on CPU "
                                   f"{t.cpu[0].name}"), last
            assert r.stdout == ""
            assert not engine.image_exists(refs.good)
            assert engine.image_exists(refs.untested)
    finally:
        for ref in (refs.untested, refs.good):
            engine.remove_image(ref)
        engine.tag(image.ensure_image(arch, engine=engine), refs.alias)


def test_killed_build_is_not_reused(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL during the build/self-test: the tested tag never appears, a rerun rebuilds."""
    arch = ARCHES[0]
    t = matrix().target(arch)
    # A checkout whose Dockerfile differs by a comment: a new content hash whose layers all
    # come from the cache, so the build reaches its self-test quickly.
    root = tmp_path / "checkout"
    _checkout_copy(root, arch)
    with (root / image.DOCKERFILE).open("a") as fh:
        fh.write(f"# killed-build test {uuid.uuid4().hex}\n")
    base_id = engine.image_id(image.ensure_base(engine)) or matrix().project.base_image
    refs = image.ImageRefs(arch, image.content_hash(t, base_id=base_id, root=root))
    env = {**os.environ, "RVTORCH_ROOT": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "rvtorch", "image", "build", "--arch", arch],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 900
        while not engine.image_exists(refs.untested):
            assert proc.poll() is None, "build ended before it could be killed"
            assert time.monotonic() < deadline, "build did not get to its self-test"
            time.sleep(1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        assert not engine.image_exists(refs.good)
        # A rerun sees no tested image and builds (and tests) again.
        r = subprocess.run([sys.executable, "-m", "rvtorch", "image", "build", "--arch", arch],
                           env=env, capture_output=True, text=True, timeout=1800, check=False)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip() == refs.good
        assert engine.image_exists(refs.good) and not engine.image_exists(refs.untested)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for ref in (refs.untested, refs.good):
            engine.remove_image(ref)
        # Keep the shared alias on the project's own image.
        engine.tag(image.ensure_image(arch, engine=engine), refs.alias)
